"""The control plane: the command line, the service's processes (supervisor, reload), the
Envoy bootstrap (render), the sidecar injector, the local stack and replay."""
