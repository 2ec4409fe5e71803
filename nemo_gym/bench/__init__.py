"""`make bench`: how much the adapter costs per request, measured against a fast local upstream."""
