"""One module or folder per checkpoint format, each with ``detect`` (does this path hold it?), ``open`` (as a
mxfp4.convert.stream.Source of canonical tensors) and, where it is a target, ``write``; mxfp4.convert.registry
lists them in one table."""
