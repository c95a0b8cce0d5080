"""Reading and writing files: FCS, sample sheets, Gating-ML, FlowJo workspaces, output folders."""
