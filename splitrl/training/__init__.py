"""Training runs: configuration, run directories, callbacks and the trainer behind ``splitrl train``.

The modules are imported on demand (``splitrl.training.trainer`` pulls in torch), so that the
command line's ``--help`` stays fast.
"""
