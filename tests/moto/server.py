"""moto (a stand-in for AWS) on a free loopback port: Firehose, with the S3
its delivery streams write to. Prints "listening PORT" once it accepts
connections, then serves until killed."""

import sys

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

app = DomainDispatcherApplication(create_backend_app)
server = make_server("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0, app, threaded=True)
print(f"listening {server.server_port}", flush=True)
server.serve_forever()
