"""The pipeline: the bounded monitoring queue, the one worker thread that decodes and windows
events, the columnar window, segments and the prediction log."""
