"""What tests and benchmarks share; test modules import from here, never from each other.

- `waiting`: `eventually` / `eventually_async`, the one way to wait for something to hold.
- `processes`: redis-server, daphne workers and nginx on free loopback ports (`Stack`), with
  `databases` (each stack's database, a copy of one migrated once) and `django_shell` (the
  stack's Django, kept up, that runs `Stack.django` code).
- `yclient`: the y-websocket protocol client, in-process (`CommunicatorClient`) or over a
  socket to a worker (`WsClient`, `open_client`).
- `consumer`: in-process clients of the consumer signed in as one of the cast.
- `cast`: users and their session cookies; `corpus`: the shared nbformat corpus.
- `seed`, `audit`: data made inside a stack's database or the test database.
- `browser`, `editor`: Playwright fixtures and logged-in pages of the notebook editor.
- `kernels`, `kernel_http`, `http`: the kernel endpoints and pages, in-process or over HTTP.
- `faults`: a TCP proxy that refuses or cuts connections, and a reconnecting typist.
"""
