"""The model toolchain: zoo, train-step compiler, package writer, ORT-format and official-artifact exports."""
