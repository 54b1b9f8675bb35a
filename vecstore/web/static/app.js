/* vecstore serve: the review UI. Plain ES2020, no framework; every string from the server
   goes into the page as text (textContent / text nodes), never as markup. */
(() => {
  "use strict";

  // ---- rendering helpers ------------------------------------------------------------------
  const PROPS = new Set(["value", "checked", "disabled", "selected"]);

  /** el("div", {class: "x", onclick: fn, "data-id": 3}, "text", child, [more]): a DOM element;
      strings become text nodes, "on..." functions event listeners, the rest attributes. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    const props = [];
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else if (PROPS.has(k)) props.push([k, v]);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    add(node, children);
    for (const [k, v] of props) node[k] = v; // after the children (a select's value)
    return node;
  }

  function add(node, children) {
    for (const c of children.flat(Infinity)) {
      if (c == null || c === false) continue;
      node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const $ = (sel) => document.querySelector(sel);
  const num = (x, d = 3) => (x == null || Number.isNaN(x) ? "–" : Number(x).toFixed(d));
  const pct = (x) => (x == null ? "–" : `${(100 * x).toFixed(1)}%`);
  const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));
  const intId = (x) => {
    const n = Number(x);
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`bad image id from the server: ${x}`);
    return n;
  };
  const thumbUrl = (id, size = 160) => `/api/images/${intId(id)}/thumb?size=${size}`;
  const fullUrl = (id, q) => `/api/images/${intId(id)}/full${q ? `?${q}` : ""}`;

  function table(head, rows, cls) {
    return el("table", { class: cls },
      head && el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c))))));
  }

  function probBars(p, classes, chosen) {
    if (!p || !classes.some((c) => p[c] != null)) return null;
    return el("table", { class: "probs" }, classes.map((c) => {
      const bar = el("div", { class: "bar" });
      bar.style.width = `${(100 * clamp(p[c] || 0, 0, 1)).toFixed(1)}%`;
      return el("tr", { class: c === chosen ? "chosen" : null },
        el("td", { class: "cls" }, c), el("td", { class: "barcell" }, bar),
        el("td", { class: "num" }, num(p[c])));
    }));
  }

  /** A thumbnail card linking to the image's page. */
  function card(id, name, lines) {
    return el("a", { class: "card", "data-id": intId(id), href: `#/image/${intId(id)}`, title: name },
      el("img", { src: thumbUrl(id), alt: "", loading: "lazy" }),
      lines.map((l) => el("div", { class: "cap" }, l)));
  }

  function sourceWord(source) {
    return { expert: "expert", propagated: "pseudo", none: "unlabeled" }[source] || source || "";
  }

  // ---- status line and the API ------------------------------------------------------------
  const REVIEWER_KEY = "vecstore.reviewer";
  const reviewer = () => localStorage.getItem(REVIEWER_KEY) || "";

  function setStatus(text, kind = "info", action = null) {
    const s = $("#status");
    s.className = kind;
    s.replaceChildren(text);
    if (action) s.append(" ", el("button", { type: "button", onclick: action.fn }, action.text));
  }

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  function detailText(body, res) {
    const d = body && body.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
    return `${res.status} ${res.statusText}`;
  }

  /** fetch JSON from the API: the reviewer's name on every request, the CSRF header on the
      ones that change something; a 4xx/5xx throws an ApiError with the server's detail. */
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const who = reviewer().trim();
    if (who && /^[\x20-\x7e\xa0-\xff]*$/.test(who)) headers["X-Reviewer"] = who;
    const init = { method, headers, credentials: "same-origin" };
    if (method !== "GET") {
      headers["X-Vecstore"] = "1";
      if (body instanceof FormData) init.body = body; // the browser sets its multipart type
      else {
        headers["Content-Type"] = "application/json";
        if (body !== undefined) init.body = JSON.stringify(body);
      }
    }
    const res = await fetch(path, init);
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      if (res.ok) throw new ApiError(res.status, `not JSON from ${path}`);
    }
    if (!res.ok) throw new ApiError(res.status, detailText(data, res));
    return data;
  }

  function showError(err) {
    const busy = err instanceof ApiError && err.status === 409;
    setStatus(busy ? `busy: ${err.message.replace(/^busy:\s*/, "")}` : `error: ${err.message}`,
      busy ? "busy" : "err");
  }

  async function summary() {
    const s = await api("GET", "/api/summary");
    $("#store").textContent = `${s.store} · ${s.images} images`;
    return s;
  }

  async function setLabel(id, label, extra = {}) {
    const r = await api("POST", `/api/images/${intId(id)}/label`, { label, ...extra });
    return r;
  }

  async function undo(batch) {
    return api("POST", "/api/labels/undo", { batch });
  }

  function labeledMessage(r, name) {
    return `${name}: ${r.previous == null ? "no label" : r.previous} → ${r.label == null ? "no label" : r.label}` +
      ` (batch ${r.batch}, by ${r.who})`;
  }

  // ---- routing ----------------------------------------------------------------------------
  let navToken = 0;
  let keyHandler = null;

  function route() {
    const token = ++navToken;
    document.body.dataset.ready = "";
    keyHandler = null;
    const [path, query] = location.hash.replace(/^#/, "").split("?");
    const parts = path.split("/").filter(Boolean);
    const view = parts[0] || "gallery";
    for (const a of document.querySelectorAll("#nav a")) {
      a.classList.toggle("active", a.dataset.view === view);
    }
    const main = $("#main");
    const ctx = {
      params: new URLSearchParams(query || ""),
      live: () => token === navToken,
      show: (...nodes) => token === navToken && (main.replaceChildren(...nodes), true),
      ready: (name) => {
        if (token === navToken) document.body.dataset.ready = name;
      },
      onKey: (fn) => {
        if (token === navToken) keyHandler = fn;
      },
    };
    let run;
    if (view === "gallery") run = gallery(ctx);
    else if (view === "image" && /^\d+$/.test(parts[1] || "")) run = imagePage(ctx, Number(parts[1]));
    else if (view === "review" || view === "next") run = queueView(ctx, view);
    else if (view === "dashboard") run = dashboard(ctx);
    else {
      location.hash = "#/gallery";
      return;
    }
    run.catch((err) => {
      if (!ctx.live()) return;
      showError(err);
      ctx.show(el("p", { class: "error" }, err.message));
      ctx.ready("error");
    });
  }

  // ---- gallery ----------------------------------------------------------------------------
  const PAGE = 60;

  async function gallery(ctx) {
    const q = ctx.params;
    const f = {
      label: q.get("label") || "", source: q.get("source") || "",
      needs_review: q.get("needs_review") || "", cluster: q.get("cluster") || "",
      sort: q.get("sort") || "id", order: q.get("order") || "asc",
      offset: Math.max(0, Number(q.get("offset")) || 0),
    };
    const s = await summary();
    const p = new URLSearchParams({ sort: f.sort, order: f.order, offset: f.offset, limit: PAGE });
    for (const k of ["label", "source", "needs_review", "cluster"]) if (f[k] !== "") p.set(k, f[k]);
    const page = await api("GET", `/api/images?${p}`);
    const go = (changes) => {
      const next = { ...f, offset: 0, ...changes };
      const h = new URLSearchParams();
      for (const [k, v] of Object.entries(next)) {
        if (v !== "" && v != null && !(k === "offset" && !v)) h.set(k, v);
      }
      location.hash = `#/gallery?${h}`;
    };
    const select = (name, options, value) => el("select", { name, value, onchange: (e) => go({ [name]: e.target.value }) },
      options.map(([v, text]) => el("option", { value: v }, text)));
    const classes = page.classes || s.classes;
    const sorts = [["id", "id"], ["confidence", "confidence"]];
    if (page.positive || s.positive) sorts.push(["p_positive", `p(${page.positive || s.positive})`]);
    const last = Math.min(page.offset + page.items.length, page.total);
    const filters = el("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
      el("label", {}, "label ", select("label", [["", "any"], ...classes.map((c) => [c, c])], f.label)),
      el("label", {}, "source ", select("source",
        [["", "any"], ["expert", "expert"], ["propagated", "pseudo"], ["none", "unlabeled"]], f.source)),
      el("label", {}, el("input", { type: "checkbox", name: "needs_review", checked: f.needs_review === "true",
        onchange: (e) => go({ needs_review: e.target.checked ? "true" : "" }) }), " needs review"),
      el("label", {}, "cluster ", el("input", { type: "number", name: "cluster", min: 0, value: f.cluster,
        onchange: (e) => go({ cluster: e.target.value }) })),
      el("label", {}, "sort ", select("sort", sorts, f.sort)),
      select("order", [["asc", "ascending"], ["desc", "descending"]], f.order));
    const pager = el("div", { class: "pager" },
      el("button", { type: "button", disabled: f.offset <= 0, onclick: () => go({ offset: Math.max(0, f.offset - PAGE) }) }, "◀ prev"),
      el("span", { class: "count" }, page.total ? `${page.offset + 1}–${last} of ${page.total}` : `0 of 0`),
      el("button", { type: "button", disabled: last >= page.total, onclick: () => go({ offset: f.offset + PAGE }) }, "next ▶"));
    const grid = el("div", { class: "grid", id: "grid" }, page.items.map((it) =>
      card(it.id, it.name, [
        [el("span", { class: `lab ${it.source}` }, it.label == null ? "—" : it.label), ` ${sourceWord(it.source)}`,
          it.needs_review ? el("span", { class: "flag", title: it.review_reason }, " ⚑") : null],
        [it.source === "propagated" ? `conf ${num(it.confidence, 2)} · ` : "", it.name],
      ])));
    if (!page.items.length) grid.append(el("p", { class: "muted" }, "No image matches."));
    ctx.show(el("section", {}, filters, pager, grid));
    ctx.ready("gallery");
  }

  // ---- image page -------------------------------------------------------------------------
  function fullViewer(d) {
    let zoom = 1;
    const img = el("img", { src: fullUrl(d.id), alt: d.name, draggable: "false" });
    const frame = el("div", { id: "full", class: "full" }, img);
    const shown = el("span", { class: "num" }, "");
    const apply = () => {
      if (!img.naturalWidth) return;
      img.style.width = `${Math.round(img.naturalWidth * zoom)}px`;
      img.style.height = `${Math.round(img.naturalHeight * zoom)}px`;
      shown.textContent = `${Math.round(zoom * 100)}%`;
    };
    const fit = () => {
      if (!img.naturalWidth) return;
      zoom = clamp(Math.min((frame.clientWidth - 4) / img.naturalWidth,
        (frame.clientHeight - 4) / img.naturalHeight), 0.05, 32);
      apply();
    };
    let fitted = false;
    img.addEventListener("load", () => (fitted ? apply() : (fitted = true, fit())));
    const by = (f) => () => { zoom = clamp(zoom * f, 0.05, 32); apply(); };
    frame.addEventListener("wheel", (e) => {
      e.preventDefault();
      by(e.deltaY < 0 ? 1.15 : 1 / 1.15)();
    }, { passive: false });
    const tools = el("div", { class: "tools" },
      el("button", { type: "button", title: "zoom out", onclick: by(1 / 1.25) }, "−"),
      shown,
      el("button", { type: "button", title: "zoom in", onclick: by(1.25) }, "+"),
      el("button", { type: "button", onclick: fit }, "fit"),
      el("button", { type: "button", onclick: () => { zoom = 1; apply(); } }, "1:1"));
    if (d.bits > 8) tools.append(windowLevel(d, img));
    return el("div", { class: "viewer" }, tools, frame);
  }

  /** Window/level sliders for an image of more than 8 bits (center and width in its units). */
  function windowLevel(d, img) {
    const [lo, hi] = Array.isArray(d.range) ? d.range : [0, 2 ** Math.min(d.bits, 16) - 1];
    const span = Math.max(hi - lo, 1);
    const center = el("input", { type: "range", id: "wl-center", min: lo, max: hi, step: "any", value: lo + span / 2 });
    const width = el("input", { type: "range", id: "wl-width", min: 1, max: span, step: "any", value: span });
    const text = el("span", { class: "num" }, "image range");
    let timer = 0;
    const update = () => {
      text.textContent = `C ${Math.round(center.value)} / W ${Math.round(width.value)}`;
      clearTimeout(timer);
      timer = setTimeout(() => {
        img.src = fullUrl(d.id, new URLSearchParams({ center: center.value, width: width.value }));
      }, 120);
    };
    center.addEventListener("input", update);
    width.addEventListener("input", update);
    const reset = () => {
      center.value = lo + span / 2;
      width.value = span;
      text.textContent = "image range";
      img.src = fullUrl(d.id);
    };
    return el("span", { class: "wl" }, el("label", {}, " level ", center), el("label", {}, " window ", width),
      text, el("button", { type: "button", onclick: reset }, "reset"));
  }

  function neighbourCards(items) {
    if (!items.length) return [el("p", { class: "muted" }, "No neighbours.")];
    return items.map((n) => card(n.id, n.name, [
      [el("span", { class: `lab ${n.source}` }, n.label == null ? "—" : n.label), ` ${sourceWord(n.source)}`],
      `#${n.rank} similarity ${num(n.similarity)}`,
    ]));
  }

  async function imagePage(ctx, id) {
    const [s, d] = await Promise.all([summary(), api("GET", `/api/images/${id}`)]);
    const classes = s.classes;
    const relabel = async (label, extra) => {
      try {
        const r = await setLabel(id, label, extra);
        setStatus(labeledMessage(r, d.name), "ok", undoAction(r.batch, d.name));
        route();
      } catch (err) {
        showError(err);
      }
    };
    const exp = d.expert_detail;
    const newClass = el("input", { type: "text", placeholder: "new class", maxlength: 128 });
    const facts = [
      ["expert label", exp ? [el("b", {}, exp.label), ` (${exp.source}${exp.chosen ? `, ${exp.chosen}` : ""}; ${exp.who || "?"}, ${exp.at || ""})`] : "none"],
      ["pseudo-label", d.source === "propagated" ? [el("b", {}, d.label), ` confidence ${num(d.confidence)}`] : "—"],
      ["runner-up", d.second_label == null ? "—" : `${d.second_label} (margin ${num(d.margin)})`],
      ["needs review", d.needs_review ? `yes: ${d.review_reason}` : "no"],
      ["decision", d.decision || "—"], ["cluster", d.cluster == null ? "—" : d.cluster],
      ["size", d.size ? `${d.size[0]} × ${d.size[1]} ${d.mode || ""} ${d.bits || ""}-bit` : "—"],
      ["sha256", el("code", {}, d.sha256 || "—")],
    ];
    const buttons = el("div", { class: "labels" },
      classes.map((c) => el("button", { type: "button", class: c === (exp && exp.label) ? "on" : null, onclick: () => relabel(c) }, c)),
      el("span", { class: "newclass" }, newClass, el("button", { type: "button", onclick: () => {
        const v = newClass.value.trim();
        if (v) relabel(v, { new_class: true });
      } }, "add class")),
      exp ? el("button", { type: "button", class: "danger", onclick: async () => {
        try {
          const r = await api("DELETE", `/api/images/${id}/label`);
          setStatus(labeledMessage(r, d.name), "ok", undoAction(r.batch, d.name));
          route();
        } catch (err) {
          showError(err);
        }
      } }, "remove expert label") : null);
    const meta = Object.entries(d.metadata || {}).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]);
    const hist = (d.history || []).map((h) => [String(h.batch), h.at, h.who, h.kind,
      `${h.old_label == null ? "—" : h.old_label} → ${h.new_label == null ? "—" : h.new_label}`, h.new_source || ""]);
    const nbTitle = el("h3", {}, "Most similar scans");
    const nb = el("div", { id: "neighbours", class: "grid small" }, el("p", { class: "muted" }, "loading…"));
    const spaceSel = el("select", { value: s.space || "" }, (s.spaces || []).map((sp) => el("option", { value: sp }, sp)));
    const upload = el("input", { type: "file", id: "query-file", accept: "image/*" });
    const loadNeighbours = async () => {
      const p = new URLSearchParams({ k: 8 });
      if (spaceSel.value) p.set("space", spaceSel.value);
      const r = await api("GET", `/api/images/${id}/neighbours?${p}`);
      nbTitle.textContent = `Most similar scans (${r.space})`;
      nb.replaceChildren(...neighbourCards(r.items));
    };
    spaceSel.addEventListener("change", () => loadNeighbours().catch(showError));
    upload.addEventListener("change", async () => {
      const file = upload.files[0];
      if (!file) return;
      const fd = new FormData();
      fd.append("file", file);
      fd.append("k", "8");
      if (spaceSel.value) fd.append("space", spaceSel.value);
      try {
        setStatus(`searching for scans like ${file.name}…`);
        const r = await api("POST", "/api/query", fd);
        nbTitle.textContent = `Most similar to the uploaded ${file.name} (${r.space})`;
        nb.replaceChildren(...neighbourCards(r.items));
        setStatus(`${r.items.length} scans like ${file.name}`, "ok");
      } catch (err) {
        showError(err);
      }
    });
    ctx.show(el("div", { class: "image-page" },
      fullViewer(d),
      el("section", { class: "info" },
        el("h2", {}, d.name), el("div", { class: "path" }, d.path),
        table(null, facts, "facts"),
        el("h3", {}, "Probabilities"), probBars(d.p, classes, d.label) || el("p", { class: "muted" }, "no propagation yet"),
        el("h3", {}, "Label"), buttons,
        el("h3", {}, "Metadata"), meta.length ? table(["key", "value"], meta, "meta") : el("p", { class: "muted" }, "none"),
        el("h3", {}, "History"), hist.length ? table(["batch", "at", "who", "kind", "change", "source"], hist, "history") : el("p", { class: "muted" }, "no label changes")),
      el("section", { class: "similar" }, nbTitle,
        el("div", { class: "row" }, el("label", {}, "space ", spaceSel),
          el("label", {}, " find similar scans to a file: ", upload)), nb)));
    try {
      await loadNeighbours();
    } catch (err) {
      showError(err);
      nb.replaceChildren(el("p", { class: "error" }, err.message));
    }
    ctx.ready("image");
  }

  function undoAction(batch, name) {
    return {
      text: "undo",
      fn: async () => {
        try {
          const r = await undo(batch);
          setStatus(`undid batch ${r.batch} (${name}): ${r.restored} restored, ${r.gone} removed`, "ok");
          route();
        } catch (err) {
          showError(err);
        }
      },
    };
  }

  // ---- review queue and "label next": one image at a time, by keyboard ------------------
  function keyMap(classes) {
    const keys = new Map();
    classes.slice(0, 9).forEach((c, i) => keys.set(String(i + 1), c));
    const first = new Map();
    for (const c of classes) {
      const k = c.charAt(0).toLowerCase();
      if (/^\p{L}$/u.test(k) && k !== "u") first.set(k, first.has(k) ? null : c);
    }
    for (const [k, c] of first) if (c != null) keys.set(k, c);
    return keys;
  }

  async function queueView(ctx, kind) {
    const s = await summary();
    const classes = s.classes;
    const keys = keyMap(classes);
    const st = { items: [], i: 0, total: 0, labeled: new Map(), undo: [], busy: false, shown: 0 };
    const fetchItems = async () => {
      if (kind === "review") {
        const r = await api("GET", "/api/queue/review?offset=0&limit=50");
        return { total: r.total, items: r.items };
      }
      const r = await api("POST", "/api/queue/next?n=20"); // a POST: recorded as a run
      const items = r.items.map((x) => ({
        id: x.image_id, name: x.name, path: x.path, label: x.pseudo_label, confidence: x.confidence,
        source: x.pseudo_label == null ? "none" : "propagated", review_reason: x.reason, cluster: x.cluster, p: null,
      }));
      return { total: items.length, items };
    };
    const more = async () => { // the queue again, less what this page has shown already
      const seen = new Set(st.items.map((x) => x.id));
      const r = await fetchItems();
      const fresh = r.items.filter((x) => !seen.has(x.id));
      st.items.push(...fresh);
      st.total = Math.max(st.items.length, kind === "review" ? st.total : 0);
      return fresh.length;
    };
    const first = await fetchItems();
    st.items = first.items;
    st.total = first.total;
    const box = el("div", { id: "queue", class: kind });
    const counter = el("span", { class: "counter" });
    const keyHelp = el("div", { class: "keys" },
      [...keys].map(([k, c]) => el("span", { class: "key" }, el("kbd", {}, k.toUpperCase()), " ", c)),
      el("span", { class: "key" }, el("kbd", {}, "Enter"), " accept pseudo-label"),
      el("span", { class: "key" }, el("kbd", {}, "U"), " undo last"),
      el("span", { class: "key" }, el("kbd", {}, "←"), el("kbd", {}, "→"), " previous / next"));
    ctx.show(el("section", {}, el("div", { class: "qhead" },
      el("h2", {}, kind === "review" ? "Review queue: flagged pseudo-labels, riskiest first" : "Label next: the images whose labels help most"),
      counter), keyHelp, box));

    const show = async () => {
      const shown = ++st.shown;
      const it = st.items[st.i];
      counter.textContent = st.items.length ? `${st.i + 1} / ${st.total}` : `0 / ${st.total}`;
      if (!it) {
        box.replaceChildren(el("p", { class: "muted done" },
          st.items.length ? "End of the queue." : "Nothing in this queue."));
        ctx.ready(kind);
        return;
      }
      const mine = st.labeled.get(it.id);
      const nb = el("div", { id: "neighbours", class: "grid small" }, el("p", { class: "muted" }, "loading…"));
      const keyOf = (c) => [...keys].filter(([, v]) => v === c).map(([k]) => k.toUpperCase()).join("/");
      box.replaceChildren(el("div", { class: "current", "data-id": it.id },
        el("div", { class: "big" }, el("img", { src: fullUrl(it.id), alt: it.name })),
        el("div", { class: "side" },
          el("h2", {}, it.name), el("div", { class: "path" }, it.path),
          table(null, [
            ["pseudo-label", it.label == null ? "—" : el("b", { class: "pseudo" }, it.label)],
            ["confidence", num(it.confidence)],
            it.second_label != null ? ["runner-up", `${it.second_label} (margin ${num(it.margin)})`] : null,
            it.risk ? ["risk", el("span", { class: "risk" }, it.risk)] : null,
            it.risk !== it.review_reason ? ["reason", it.review_reason || "—"] : null,
            ["cluster", it.cluster == null ? "—" : it.cluster],
            mine ? ["labeled here", el("b", {}, mine)] : null,
          ].filter(Boolean), "facts"),
          probBars(it.p, classes, it.label),
          el("div", { class: "labels" }, classes.map((c) => el("button", {
            type: "button", class: c === mine ? "on" : null,
            onclick: (e) => { e.currentTarget.blur(); label(c); },
          }, keyOf(c) ? el("kbd", {}, keyOf(c)) : null, " ", c)),
          el("button", { type: "button", disabled: it.label == null, onclick: (e) => { e.currentTarget.blur(); label(it.label); } },
            el("kbd", {}, "Enter"), " accept")),
          el("div", { class: "row" },
            el("button", { type: "button", onclick: () => step(-1) }, "◀ previous"),
            el("button", { type: "button", onclick: () => step(1) }, "skip ▶"),
            el("a", { href: `#/image/${intId(it.id)}` }, "open image page"))),
        el("div", { class: "nbrs" }, el("h3", {}, "Most similar"), nb)));
      try {
        const r = await api("GET", `/api/images/${intId(it.id)}/neighbours?k=6`);
        if (shown === st.shown) nb.replaceChildren(...neighbourCards(r.items));
      } catch (err) {
        if (shown === st.shown) nb.replaceChildren(el("p", { class: "error" }, err.message));
      }
      if (shown === st.shown) ctx.ready(kind);
    };

    const busy = async (fn) => {
      if (st.busy || !ctx.live()) return;
      st.busy = true;
      ctx.ready("");
      try {
        await fn();
      } catch (err) {
        showError(err);
      } finally {
        st.busy = false;
      }
      if (ctx.live()) await show();
    };

    const step = (d) => busy(async () => {
      if (d > 0 && st.i + 1 >= st.items.length) await more();
      st.i = clamp(st.i + d, 0, st.items.length);
    });

    const label = (c) => busy(async () => {
      const it = st.items[st.i];
      if (!it) return;
      if (c == null) {
        setStatus("no pseudo-label to accept: press a class key", "err");
        return;
      }
      const r = await setLabel(it.id, c, { queue: kind });
      st.labeled.set(it.id, r.label);
      st.undo.push({ batch: r.batch, index: st.i, id: it.id });
      setStatus(labeledMessage(r, it.name), "ok");
      if (st.i + 1 >= st.items.length) await more();
      st.i += 1;
    });

    const undoLast = () => busy(async () => {
      const last = st.undo.pop();
      if (!last) {
        setStatus("nothing to undo on this page", "info");
        return;
      }
      try {
        const r = await undo(last.batch);
        st.labeled.delete(last.id);
        st.i = last.index;
        setStatus(`undid batch ${r.batch}: ${r.restored} restored, ${r.gone} removed`, "ok");
      } catch (err) {
        st.undo.push(last);
        throw err;
      }
    });

    ctx.onKey((e) => {
      const k = e.key.length === 1 ? e.key.toLowerCase() : e.key;
      if (k === "Enter") label((st.items[st.i] || {}).label);
      else if (k === "u") undoLast();
      else if (k === "ArrowRight" || k === "ArrowDown") step(1);
      else if (k === "ArrowLeft" || k === "ArrowUp") step(-1);
      else if (keys.has(k)) label(keys.get(k));
      else return false;
      return true;
    });
    await show();
  }

  // ---- dashboard --------------------------------------------------------------------------
  function figure(id, value, caption) {
    return el("div", { class: "figure" }, el("div", { class: "value", id }, value), el("div", { class: "caption" }, caption));
  }

  function promiseText(pr) {
    if (!pr) return "No recall promise yet: run `vecstore evaluate --positive CLASS`.";
    const head = `Recall of “${pr.label}” at least ${pct(pr.target)} with ${pct(pr.confidence)} confidence`;
    const thr = pr.threshold == null ? "" : ` at threshold p(${pr.label}) ≥ ${num(pr.threshold)}`;
    const more = pr.more_positives ? ` ${pr.more_positives} more positive labels needed.` : "";
    return `${head}: ${pr.holds ? "holds" : "does not hold"}${thr}. ${pr.reason || ""}${more}`;
  }

  function countsTable(counts) {
    const sources = [...new Set(counts.map((c) => c.source))];
    const labels = [...new Set(counts.map((c) => (c.label == null ? "" : c.label)))];
    const get = (l, src) => counts.find((c) => (c.label == null ? "" : c.label) === l && c.source === src);
    const rows = labels.map((l) => [l === "" ? "(none)" : l, ...sources.map((src) => {
      const c = get(l, src);
      if (!c) return "";
      return c.needs_review ? `${c.count} (${c.needs_review} flagged)` : String(c.count);
    })]);
    return table(["label", ...sources.map(sourceWord)], rows, "counts");
  }

  function drawCurve(node, curve) {
    if (!window.Plotly) {
      node.replaceChildren(el("p", { class: "error" }, "plotly.js did not load"));
      return;
    }
    const traces = [{ x: curve.sizes, y: curve.accuracy, mode: "lines+markers", name: "accuracy" }];
    if (curve.recall) traces.push({ x: curve.sizes, y: curve.recall, mode: "lines+markers", name: "recall of the positive class" });
    window.Plotly.newPlot(node, traces, {
      height: 300, margin: { l: 50, r: 10, t: 10, b: 40 }, legend: { orientation: "h", y: -0.25 },
      xaxis: { title: { text: "expert labels" } }, yaxis: { title: { text: "cross-validated" }, range: [0, 1.02] },
    }, { displayModeBar: false, responsive: true });
  }

  async function dashboard(ctx) {
    let s = await summary();
    const job = el("div", { id: "job", class: "job" });
    const body = el("div", {});
    const render = () => {
      const nExpert = s.counts.filter((c) => c.source === "expert").reduce((a, c) => a + c.count, 0);
      const prop = s.propagation;
      const curve = el("div", { id: "curve" });
      body.replaceChildren(
        el("div", { class: "figures" },
          figure("n-images", s.images, "images"), figure("n-expert", nExpert, "expert labels"),
          figure("n-pseudo", s.pseudo, "pseudo-labels"), figure("n-flagged", s.flagged, "flagged for review"),
          figure("flagged-share", pct(s.flagged_share), "of pseudo-labels flagged"),
          figure("expected-accuracy", pct(s.expected_accuracy), "expected accuracy of pseudo-labels")),
        el("p", { id: "propagation", class: "prop" }, prop
          ? `Latest propagation: run ${prop.run_id}, space ${prop.space}, ${prop.method}, ${prop.at}. Data version ${s.version}.`
          : "No propagation yet."),
        el("p", { id: "promise", class: s.promise ? (s.promise.holds ? "holds" : "fails") : "muted" }, promiseText(s.promise)),
        el("div", { class: "dash" },
          el("div", {}, el("h3", {}, "Labels per class and source"), countsTable(s.counts)),
          el("div", { class: "curvebox" }, el("h3", {}, "Learning curve"),
            s.curve ? curve : el("p", { class: "muted" }, "No learning curve yet (vecstore evaluate)."))));
      if (s.curve) drawCurve(curve, s.curve);
    };
    const poll = async (j) => {
      while (ctx.live()) {
        job.textContent = `${j.kind} job ${j.id}: ${j.state}, ${num(j.seconds, 1)} s${j.message ? ` — ${j.message}` : ""}`;
        job.className = `job ${j.state}`;
        if (j.state !== "running") break;
        await new Promise((res) => setTimeout(res, 500));
        j = await api("GET", `/api/jobs/${intId(j.id)}`);
      }
      if (!ctx.live()) return;
      if (j.state === "failed") setStatus(`${j.kind} failed: ${j.message}`, "err");
      else setStatus(`${j.kind} done in ${num(j.seconds, 1)} s`, "ok");
      ctx.ready("");
      s = await summary();
      render();
      ctx.ready("dashboard");
    };
    const start = async (kind) => {
      try {
        const j = await api("POST", "/api/jobs", { kind, space: s.space });
        ctx.ready("");
        await poll(j);
      } catch (err) {
        showError(err);
        job.textContent = err.message;
        job.className = "job failed";
        ctx.ready("dashboard");
      }
    };
    ctx.show(el("section", {},
      el("div", { class: "actions" },
        el("button", { type: "button", id: "repropagate", onclick: () => start("propagate") }, "Re-propagate"),
        el("button", { type: "button", id: "reevaluate", onclick: () => start("evaluate") }, "Re-evaluate"),
        job),
      body));
    render();
    ctx.ready("dashboard");
    const running = (s.jobs || []).find((j) => j.state === "running");
    if (running) poll(running).catch(showError);
  }

  // ---- start ------------------------------------------------------------------------------
  function typing(t) {
    return t && (t.isContentEditable || ["INPUT", "SELECT", "TEXTAREA"].includes(t.tagName));
  }

  document.addEventListener("keydown", (e) => {
    if (!keyHandler || e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    if (keyHandler(e)) e.preventDefault(); // no button "click" on Enter, no page scroll on arrows
  });

  const who = $("#reviewer");
  who.value = reviewer();
  who.addEventListener("input", () => {
    const v = who.value.trim();
    if (v) localStorage.setItem(REVIEWER_KEY, v);
    else localStorage.removeItem(REVIEWER_KEY);
    if (v && !/^[\x20-\x7e\xa0-\xff]*$/.test(v)) setStatus("reviewer names are sent in Latin-1 letters only: this one is not sent", "err");
  });
  who.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === "Escape") who.blur();
  });
  window.addEventListener("hashchange", route);
  route();
})();
