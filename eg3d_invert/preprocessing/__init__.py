"""Preprocessing: any portrait photo -> EG3D-aligned 512x512 crop and camera label, offline.

Public API::

    from eg3d_invert.preprocessing import align, Aligner, AlignedFace, read_image

* :func:`align` / :class:`Aligner`: detection (MTCNN, as the official pipeline), mediapipe face
  mesh (or dlib 68 points) for the head pose, the official in-the-wild crop and the camera label
  in the official FFHQ convention. See :mod:`.crop` and :mod:`.pose` for the conventions.
* :func:`read_image`: robust photo decoding with specific errors.
"""

from .._lazy import lazy_exports

# The names below are imported on first use (PEP 562): the command line reads defaults such as
# DEFAULT_MAX_PIXELS without importing torch and the face models.
_LAZY = {
    "align": ".aligner", "Aligner": ".aligner", "AlignedFace": ".aligner",
    "CropGeometry": ".crop", "crop_face": ".crop",
    "Detection": ".detection", "FaceDetector": ".detection", "DEFAULT_THRESHOLD": ".detection",
    "dlib_available": ".landmarks",
    "label_from_rotation": ".pose",
    "DEFAULT_MAX_PIXELS": ".reading", "read_image": ".reading",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
