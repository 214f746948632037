"""The MXFP4 format itself, knowing nothing of files: spec numbers, scale rules, the numpy reference and its C,
torch and Triton twins, byte layouts, MXFP4Tensor."""
