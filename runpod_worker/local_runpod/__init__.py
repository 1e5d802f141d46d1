"""A local stand-in for a RunPod queue endpoint: the public job API and the worker-side protocol.

    python -m runpod_worker.local_runpod --port 8765 --endpoint-id local --api-key secret --workers 1

It starts N processes of the unmodified `python -m runpod_worker.handler` in the SDK's production mode and
replaces any that die. Modules: `state.py` (the queue, jobs, timeouts, the worker protocol), `jobs.py`
(one job and its documents), `workers.py` (the worker processes and their environment), `webhooks.py`,
`faults.py` (the fault switches), `server.py` (the HTTP face), `cli.py` (the entry point). `README.md`
beside this file lists every behaviour with the upstream source it follows.
"""
