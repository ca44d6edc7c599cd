"""Looking at results: interpretation (top losses, confusion), re-scoring a run on today's data, Grad-CAM, likely
wrong labels (out-of-fold models) and the shareable report. The top layer: imports everything below it."""
