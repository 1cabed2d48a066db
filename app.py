"""MetaFormer Explorer in the browser: `python app.py [--host 127.0.0.1] [--port 7860] [--share]`, the same as
`explorer serve`."""

import sys

from explorer.__main__ import main

if __name__ == '__main__':
    sys.exit(main(['serve', *sys.argv[1:]]))
