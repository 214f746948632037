"""Files on disk, knowing nothing of gpt-oss: validated safetensors reading and streaming writing, sharded
directories, positioned reads, atomic outputs and locks, free space, hub ids, the GGUF header check."""
