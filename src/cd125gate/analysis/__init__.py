"""From events to a decision: panel, compensation, transforms, QC, gating, threshold, criterion."""
