"""gpt-oss as data, knowing nothing of conversion: the config (validated, both forms), the 20b/120b presets, and
one table of every tensor's names and shape rule."""
