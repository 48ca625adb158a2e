"""The `.tflite` file itself, read without an interpreter: the flatbuffer parser (`flatbuffer`), its records
(`records`: the NamedTuples and constants the parser, its checks and the delegate plugins share), the structural
checks (`checks`), the schema's operator table (`_builtin_operators`), and `info`: the typed `ModelInfo` and
`TensorSpec` (`edgert.inspect_model`). It imports nothing of edgert's but `errors`."""
