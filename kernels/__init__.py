"""The kernel bridge: a Jupyter Server client, iopub -> output mapping, a local server launcher,
the per-notebook run queue (`bridge`), one driving worker per notebook (`cluster`), the kernel
servers people register (`models`, `servers`, `crypto`) and the endpoints (`views`, `pages`).

The client modules (`jupyter`, `execution`, `outputs`, `textops`, `local_server`) import no Django,
so they work (and are tested) without settings: pure asyncio, httpx, websockets and pycrdt.
"""
