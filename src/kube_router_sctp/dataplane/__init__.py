"""What the dataplane test runs kube-router against: a stand-in for the Kubernetes API
(``kubeapi``) and builders for the 2019 field report's objects (``manifests``)."""
