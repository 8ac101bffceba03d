"""Baseline trackers beside the toolkit's own: OpenCV's classical trackers (MIL, KCF, CSRT) and its
DNN trackers on public weights (NanoTrack v2, VitTrack), NanoTrack v3 through this toolkit's
runner, and the identity box. All are got10k trackers, built by name through the registry
(:mod:`tracker.registry`, :func:`tracker.build_tracker`)."""
