"""Delegate plugins (XNNPACK, GPU, NNAPI, Edge TPU, external libraries), imported as edgert.delegates."""
