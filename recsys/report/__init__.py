"""The run report: one self-contained HTML page of what the last runs did (``recsys report``)."""
