"""MetaFormer Explorer in the browser: `python app.py [--host 127.0.0.1] [--port 7860] [--share]`."""
import argparse

from explorer.app.main import build_demo
from explorer.app.context import launch_kwargs

demo = build_demo()

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1', help='interface to listen on (0.0.0.0: the whole network)')
    parser.add_argument('--port', type=int, default=7860)
    parser.add_argument('--share', action='store_true', help='also open a public gradio.live link')
    args = parser.parse_args()
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs())
