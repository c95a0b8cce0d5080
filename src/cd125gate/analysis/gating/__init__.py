"""The blast gate hierarchy: gate classes, proposers, populations and their helpers."""
