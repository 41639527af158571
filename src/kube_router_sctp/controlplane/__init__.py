"""The Kubernetes control plane of the dataplane proof: etcd (Debian's ``etcd-server``),
kube-apiserver and kube-controller-manager built by the project from a pinned module
(``build``), started on loopback ports chosen at run time (``cluster``), driven with
kubectl (``kubectl``), with the kubelet's part played by the test (``kubelet``)."""

# What the control plane needs installed on the host: (command, Debian package).
HOST_TOOLS = (("etcd", "etcd-server"), ("kubectl", "kubernetes-client"), ("openssl", "openssl"))
