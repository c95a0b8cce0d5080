"""Small numpy estimators: Gaussian mixture and MCD, densities and peaks, the Wilson interval."""
