"""Applications of a trained CMP: click annotation and guided animation."""
