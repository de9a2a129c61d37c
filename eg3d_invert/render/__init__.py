"""Rendering outputs of an inverted (or sampled) subject: novel views, depth, orbit video, mesh.

Everything starts from a :class:`Scene` (the generator plus tri-planes computed once):

>>> scene = Scene.from_ws(G, ws)                                   # doctest: +SKIP
>>> render_views(scene, yaws=[-30, 0, 30]).grid().save("views.png")  # doctest: +SKIP
>>> render_depth(scene, yaws=[0]).save("depth/")                   # doctest: +SKIP
>>> render_orbit_video(scene, "orbit.mp4", frames=120, fps=60)     # doctest: +SKIP
>>> save_mesh(extract_mesh(scene, resolution=256), "mesh.glb")     # doctest: +SKIP

Angles are geometric degrees (yaw positive toward the subject's left, pitch positive above);
geometry is in EG3D's world frame (+y up, face toward +z) and world units.
"""

from .depth import DepthMaps, colorize_depth, render_depth
from .mesh import EmptyMeshError, extract_mesh, save_mesh
from .scene import Scene
from .video import VideoInfo, render_orbit_video
from .views import ViewSet, image_grid, render_view, render_views

__all__ = [
    "Scene", "ViewSet", "render_views", "render_view", "image_grid",
    "DepthMaps", "render_depth", "colorize_depth",
    "VideoInfo", "render_orbit_video",
    "extract_mesh", "save_mesh", "EmptyMeshError",
]
