"""Images in, labels and boxes out: the task decoders (classify, detect, segment) as plain functions over arrays."""
