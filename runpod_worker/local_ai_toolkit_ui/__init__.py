"""A local stand-in for AI Toolkit's web UI API, as a RunPod Pod running the official template serves it.

    python -m runpod_worker.local_ai_toolkit_ui --root var/aitk-pod --port 8675 --token secret

It answers the UI's routes the studio uses with the real bodies, status values and queue
semantics, keeps the UI's own SQLite database (`aitk_db.db`, the same tables), and starts the
simulated trainer (`runpod_worker/simulated_ai_toolkit/run.py`) the way the UI's cron worker starts
AI Toolkit's run.py; the trainer writes its progress into that database and `loss_log.db` as
AI Toolkit's `diffusion_trainer` does. Everything follows ostris/ai-toolkit at 27a03a91 (`ui/`),
cited beside each behaviour: `server.py` (front server, auth, faults), `routes.py` (the API routes),
`files.py` (public file routes), `cron.py` (queue worker), `db.py` (the database).

It was checked route by route against the real UI built from that commit (`bench/aitoolkit_ui_proof.py`,
docs/TRAINING.md), and a pod-mode run through the studio records the same on both
(`bench/aitoolkit_ui_pod_run.py`). Not served: the UI's pages and the routes the studio never calls (GPU
and CPU stats, monitor, zip, scripts, plugins, image upload/delete/caption, captions, audio art, Ostris
Cloud): they answer 404.
"""
