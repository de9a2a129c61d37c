"""Identity similarity (dlib's face-recognition ResNet): same face high, other person apart, no
number for a render without a face."""

from __future__ import annotations

import matplotlib.cbook
import numpy as np
import pytest
import skimage.data

from eg3d_invert.inversion.identity import SAME_PERSON_DISTANCE, IdentityModel, IdentityScore
from eg3d_invert.preprocessing import align


@pytest.fixture(scope="module")
def faces():
    astronaut = align(skimage.data.astronaut()).image
    grace = align(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).image
    return astronaut, grace


def test_same_face_other_person_and_no_face(faces):
    astronaut, grace = faces
    model = IdentityModel()
    ref = model.descriptor(astronaut)
    assert ref.shape == (128,)
    shifted = model.compare(ref, np.roll(astronaut, 6, axis=1))
    mirrored = model.compare(ref, np.ascontiguousarray(astronaut[:, ::-1]))
    other = model.compare(ref, grace)
    assert shifted.same_person and mirrored.same_person and not other.same_person
    assert shifted.similarity > 0.99 and mirrored.similarity > 0.97 > other.similarity
    assert other.distance > SAME_PERSON_DISTANCE > mirrored.distance
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    none = model.compare(ref, noise, "view yaw +30")
    assert none.similarity is None and none.note == "no face found in the view yaw +30"
    assert none.to_dict() == {"similarity": None, "note": "no face found in the view yaw +30"}
    assert model.compare(None, astronaut).note == "no face found in the photo"
    assert set(IdentityScore(0.9, 0.3).to_dict()) == {"similarity", "distance", "same_person"}
