"""Look at inverted heads and edit them in a browser: ``eg3d-invert view RESULT_DIR...``.

::

    from eg3d_invert.viewer import serve

    server = serve(["runs/portrait"], port=0)     # loads the results, serves on 127.0.0.1
    print(server.url)                             # http://127.0.0.1:PORT/
    ...
    server.stop()

Modules: :mod:`.frames` (previews and full frames from planes computed once), :mod:`.editing`
(SeFa directions, truncation, interpolation and style mixing), :mod:`.session` (the loaded
results, their edited scenes, meshes and Save), :mod:`.server` (the HTTP contract, on
127.0.0.1 only), ``static/`` (the page; third-party JavaScript vendored under
``static/vendor/`` with its licence).
"""

from .editing import Edit, SefaDirections, apply_edit, cached_sefa_directions, sefa_directions
from .frames import FrameSpec, LiveSettings, render_frame
from .server import PortError, ViewerServer, serve
from .session import ResultSession, SaveError, UnknownResultError, Viewer

__all__ = ["serve", "ViewerServer", "Viewer", "ResultSession", "LiveSettings", "FrameSpec", "render_frame", "Edit",
           "apply_edit", "SefaDirections", "sefa_directions", "cached_sefa_directions", "PortError", "SaveError",
           "UnknownResultError"]
