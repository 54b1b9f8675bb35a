"""python -m vecstore.cli"""

from . import main

main()
