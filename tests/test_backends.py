"""tracker/backends.py: folded torch and ONNX Runtime feature extractors track like the model's own
forward (boxes within 0.5 px on a generated sequence); backend choice, thread policy, result keys."""
import cv2
import numpy as np
import pytest
import torch

from common.threads import apply_thread_policy
from data.synthetic import generate_sequence
from evaluation.experiment import tracker_identity
from tracker import build_tracker
from tracker.backends import (
    BACKEND_REVISION,
    BackendError,
    CropBorder,
    FoldedFeatures,
    build_features,
    crops_as_convolutions,
    onnx_session,
    onnxruntime_available,
    resolve_backend,
)
from tracker.models import build_model
from tracker.siamfc import TrackerError

needs_ort = pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime / onnx not installed")


def _track(tracker, frames, box) -> np.ndarray:
    tracker.init(frames[0], box)
    return np.stack([np.asarray(box, float)] + [tracker.update(f) for f in frames[1:]])


@pytest.fixture(scope="module")
def sequence():
    seq = generate_sequence(5, num_frames=8, frame_size=(200, 150))
    return seq.frames, seq.boxes[0]


@pytest.mark.parametrize("name, backends", [
    ("siamfc", ["torch", "onnxruntime"]),
    ("re-siamfc", ["onnxruntime"]),
])
def test_backends_track_like_the_unfused_model(sequence, name, backends):
    if "onnxruntime" in backends and not onnxruntime_available():
        pytest.skip("onnxruntime / onnx not installed")
    frames, box = sequence
    reference = _track(build_tracker(name, device="cpu", backend="torch-unfused"), frames, box)
    for backend in backends:
        tracker = build_tracker(name, device="cpu", backend=backend)
        assert tracker.backend == backend
        boxes = _track(tracker, frames, box)
        assert np.abs(boxes - reference).max() < 0.5, (backend, np.abs(boxes - reference).max())
        if backend == "onnxruntime":        # one fixed-shape session each: template bank, search batch
            p = tracker.params
            assert set(tracker.features.sessions) == {
                (max(1, p.orientations), 3, tracker.config.exemplar_size, tracker.config.exemplar_size),
                (p.scale_num, 3, tracker.config.instance_size, tracker.config.instance_size)}


def test_optimised_backends_correlate_one_template_by_gemm(sequence, monkeypatch):
    """The GEMM correlation runs for the upright trackers on an optimised backend only: the
    reference backend and a template bank keep conv2d; the responses agree to float rounding."""
    import tracker.heads as heads
    calls = []
    gemm = heads.xcorr_gemm
    monkeypatch.setattr(heads, "xcorr_gemm", lambda z, x: calls.append(z.shape[0]) or gemm(z, x))
    frames, box = sequence
    responses = {}
    for name, backend in [("siamfc", "torch-unfused"), ("siamfc-ien-rot", "torch"), ("siamfc", "torch")]:
        calls.clear()
        tracker = build_tracker(name, device="cpu", backend=backend)
        tracker.init(frames[0], box)
        search = tracker._tensor(np.stack([frames[1][:255, :200]] * 3))
        responses[name, backend] = tracker.compute_responses(search)
        assert calls == ([1] if (name, backend) == ("siamfc", "torch") else [])
    reference = responses["siamfc", "torch-unfused"]
    assert np.abs(responses["siamfc", "torch"] - reference).max() < 1e-4 * np.abs(reference).max()


@needs_ort
def test_siamrpn_outputs_agree_across_backends(sequence):
    """SiamRPN's anchors can tie to the last bits, so its boxes are compared through the network
    outputs on the same search crop (anchor scores and box deltas)."""
    frames, box = sequence
    outputs = {}
    for backend in ("torch-unfused", "torch", "onnxruntime"):
        tracker = build_tracker("siamrpn", device="cpu", backend=backend)
        tracker.init(frames[0], box)
        crop = np.asarray(frames[1][:127 * 2, :127 * 2])
        search = tracker._tensor(np.ascontiguousarray(cv2.resize(crop, (255, 255)))[None])
        outputs[backend] = tracker.compute_outputs(search)
    score, deltas = outputs["torch-unfused"]
    for backend in ("torch", "onnxruntime"):
        assert np.abs(outputs[backend][0] - score).max() < 1e-4
        assert np.abs(outputs[backend][1] - deltas).max() < 1e-3


def _tiny(**model):
    torch.manual_seed(0)
    config = {"type": "siamfc", "backbone": {"name": "resnet22", "group": "R8", "width_mult": 0.0625}, **model}
    net = build_model(config).eval()
    for m in net.modules():        # non-trivial BatchNorm statistics, so folding has something to do
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net


@pytest.mark.parametrize("model, normalisation_folded", [
    ({}, True),                                          # ResNet-22: unpadded 7x7 stem
    ({"neck_channels": 8}, True),                        # neck: conv + BN, folded too
    ({"pool_groups": True}, True),                       # group max-pool between backbone and head
    ({"backbone": {"name": "resnet18", "group": "R4", "width_mult": 0.0625}}, False),   # padded stem
])
def test_folded_features_equal_the_model_features(model, normalisation_folded):
    net = _tiny(**model)
    folded = FoldedFeatures(net)
    assert folded.normalisation_folded is normalisation_folded
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    images = torch.rand(2, 3, 127, 127) * 255
    with torch.inference_mode():
        want, got = net.extract(images).out, folded(images)
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    if onnxruntime_available():
        with torch.inference_mode():
            ort = build_features(net, "onnxruntime", "cpu")(images)
        assert torch.allclose(ort, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_resolve_backend_choices():
    assert resolve_backend("auto", "cpu", live_model=True) == "torch-unfused"
    assert resolve_backend("auto", "cpu") == ("onnxruntime" if onnxruntime_available() else "torch")
    assert resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend(" Torch ", "cpu") == "torch"
    with pytest.raises(BackendError, match="unknown backend 'tensorrt'"):
        resolve_backend("tensorrt", "cpu")
    if onnxruntime_available():
        with pytest.raises(BackendError, match="runs on the CPU"):
            resolve_backend("onnxruntime", "cuda")


def test_build_tracker_defaults_and_errors():
    net = _tiny()
    assert build_tracker("siamfc", model=net, device="cpu").backend == "torch-unfused"   # a live model
    assert build_tracker("siamfc", model=net, device="cpu", backend="torch").backend == "torch"
    with pytest.raises(TrackerError, match="unknown backend"):
        build_tracker("siamfc", model=net, device="cpu", backend="bogus")


def test_thread_policy_sets_torch_and_opencv_threads():
    torch_before, cv2_before = torch.get_num_threads(), cv2.getNumThreads()
    try:
        assert apply_thread_policy(1) == 1
        assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
        assert apply_thread_policy(None) >= 1
        for bad in (0, -2, 1.5, True):
            with pytest.raises(ValueError, match="threads must be an integer >= 1"):
                apply_thread_policy(bad)
    finally:
        torch.set_num_threads(torch_before)
        cv2.setNumThreads(cv2_before)


@needs_ort
def test_onnxruntime_session_takes_the_thread_count():
    torch_before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        features = build_features(_tiny(), "onnxruntime", "cpu")
        torch.set_num_threads(2)                 # sessions made later keep the count at build
        assert features.session_for((1, 3, 64, 64)).get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(torch_before)


def test_result_keys_name_the_backend_except_the_model_own_forward():
    plain = tracker_identity("siamfc", options={})
    assert "backend" not in plain                                 # keys of results made before backends
    assert "backend" not in tracker_identity("siamfc", options={}, backend="torch-unfused")
    fast = tracker_identity("siamfc", options={}, backend="onnxruntime")
    assert fast["backend"] == "onnxruntime" and fast["backend_revision"] == BACKEND_REVISION >= 2
    assert "backend" not in tracker_identity("cv2-mil", backend="onnxruntime")


@needs_ort
def test_onnxruntime_fixed_shape_sessions_match_the_dynamic_model():
    net = _tiny()
    features = build_features(net, "onnxruntime", "cpu")
    features.max_fixed_shapes = 2
    dynamic = onnx_session(features.model_bytes, 1)
    rng = np.random.default_rng(0)
    for shape in [(2, 3, 127, 127), (3, 3, 96, 96), (2, 3, 127, 127), (1, 3, 111, 143)]:
        images = torch.from_numpy((rng.random(shape) * 255).astype(np.float32))
        with torch.inference_mode():
            want = net.extract(images).out
            got = features(images)
        assert got.shape == want.shape
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
        assert np.abs(got.numpy() - dynamic.run(None, {"images": images.numpy()})[0]).max() <= 1e-5 * float(
            want.abs().max())
    # two pinned shapes, then the dynamic graph for the third
    assert list(features.sessions) == [(2, 3, 127, 127), (3, 3, 96, 96), None]
    assert features.sessions[(3, 3, 96, 96)].get_inputs()[0].shape == [3, 3, 96, 96]
    assert features.sessions[None].get_inputs()[0].shape == ["batch", 3, "height", "width"]


@needs_ort
def test_onnxruntime_input_from_crops_is_converted_once():
    features = build_features(_tiny(), "onnxruntime", "cpu")
    crops = np.random.default_rng(1).integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    images = features.images_from_crops(crops)
    reference = torch.from_numpy(crops).permute(0, 3, 1, 2).float()      # the torch backends' path
    assert images.dtype == torch.float32 and images.is_contiguous() and torch.equal(images, reference)
    array = images.numpy()
    assert np.ascontiguousarray(array, dtype=np.float32) is array        # handed to ONNX Runtime as is


def test_border_crops_become_depthwise_convolutions_with_the_same_values():
    net = _tiny()
    folded = FoldedFeatures(net)
    images = torch.rand(2, 3, 127, 127) * 255
    with torch.inference_mode():
        want = folded(images)
    crops = sum(1 for m in net.backbone.modules() if type(m).__name__ == "CIRUnit")
    assert crops_as_convolutions(folded.backbone, torch.zeros(1, 3, 127, 127)) == crops == 7
    assert sum(isinstance(m, CropBorder) for m in folded.modules()) == crops
    assert "getitem" not in folded.backbone.code
    with torch.inference_mode():
        assert torch.equal(folded(images), want)              # one-hot kernels: exactly the same values
    x = torch.randn(1, 4, 9, 11)
    assert torch.equal(CropBorder(4, 2)(x), x[:, :, 2:-2, 2:-2])
