"""tunesmith: fine-tune large language models end to end from one YAML file."""

__version__ = "0.1.0"
