"""Deployment: ONNX export, the device runtime and the edge server.

Modules, one job each: ``protocol`` (wire format), ``segments`` (ONNX stages and exit heads run
with onnxruntime), ``policy`` (the exported policy and its metadata), ``pacing`` (a sender paced to
an uplink trace), ``device`` (the device runtime, ``splitrl run-device``), ``server`` (the edge
server, ``splitrl serve``), ``onnx_export`` and ``export`` (``splitrl export``), ``netem``
(namespaces with tc shaping), ``torch_segments`` (a torch model behind the segment interface).
Nothing is imported here, so the device side never loads torch; see ``docs/deploy.md``.
"""
