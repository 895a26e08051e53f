"""``prvql app``: a local web page to find an object in one's own video (draw a box, watch the search, play the answer).

- :mod:`prvql.app.pipeline`: the model loaded once and one locate job on a video, through the same library functions
  as ``prvql locate`` (decode, :func:`prvql.infer.locate.locate`, :func:`prvql.infer.outputs.write_locate_outputs`);
- :mod:`prvql.app.jobs`: the job queue (one worker per device, queue positions, cancel);
- :mod:`prvql.app.store`: uploads and jobs in per-item temporary folders, owned by one browser session, expired;
  the H.264 preview of a video the browser cannot play;
- :mod:`prvql.app.server`: the Starlette application (HTTP API and the page in ``static/``).

Needs the ``app`` extra (``pip install -e .[app]``: starlette, uvicorn).
"""
