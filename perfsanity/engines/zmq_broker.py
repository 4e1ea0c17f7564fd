"""Event-plane broker for Dynamo's ZMQ event plane (run with the Dynamo venv's interpreter).

Without a broker, Dynamo 1.6.1 workers bind their event-plane sockets on 0.0.0.0 whatever
``DYN_EVENT_PLANE_HOST`` says; with ``DYN_ZMQ_BROKER_URL`` they only connect out. The broker binds
an XSUB and an XPUB socket on the given host with OS-assigned ports and prints, as its first line,
the value for ``DYN_ZMQ_BROKER_URL``. Imports only pyzmq and the standard library.

Usage: ``python -m perfsanity.engines.zmq_broker HOST``
"""

import sys


def main() -> None:
    import zmq

    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    ctx = zmq.Context()
    xsub = ctx.socket(zmq.XSUB)
    xsub.bind(f"tcp://{host}:*")
    xpub = ctx.socket(zmq.XPUB)
    xpub.bind(f"tcp://{host}:*")
    print(f"xsub={xsub.LAST_ENDPOINT.decode()} , xpub={xpub.LAST_ENDPOINT.decode()}", flush=True)
    zmq.proxy(xsub, xpub)


if __name__ == "__main__":
    main()
