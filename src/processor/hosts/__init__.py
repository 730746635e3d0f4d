"""Hosts and tools over the library: the REST server (rest.py, TF Serving's REST API), the command line
(cli.py, `python -m processor`), and the bridge the C ABI's embedded interpreter calls (c_host.py)."""
