"""Preprocessing: any portrait photo -> EG3D-aligned 512x512 crop and camera label, offline.

Public API::

    from eg3d_invert.preprocessing import align, Aligner, AlignedFace, read_image

* :func:`align` / :class:`Aligner`: detection (MTCNN, as the official pipeline), mediapipe face
  mesh (or dlib 68 points) for the head pose, the official in-the-wild crop and the camera label
  in the official FFHQ convention. See :mod:`.crop` and :mod:`.pose` for the conventions.
* :func:`read_image`: robust photo decoding with specific errors.
"""

from .aligner import AlignedFace, Aligner, align
from .crop import CropGeometry, crop_face
from .detection import Detection, FaceDetector
from .landmarks import dlib_available
from .pose import label_from_rotation
from .reading import DEFAULT_MAX_PIXELS, read_image

__all__ = ["align", "Aligner", "AlignedFace", "read_image", "CropGeometry", "crop_face", "Detection",
           "FaceDetector", "dlib_available", "label_from_rotation", "DEFAULT_MAX_PIXELS"]
