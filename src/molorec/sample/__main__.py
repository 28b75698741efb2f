"""python -m molorec.sample OUT_DIR: write the bundled sample."""

from molorec.sample import main

main()
