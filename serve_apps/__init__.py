"""Ray Serve applications: the gateway ingress and the model servers."""
