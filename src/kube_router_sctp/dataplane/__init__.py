"""The dataplane proof's node (a Docker-host VM), its workload (pods for the manifests'
Services, the targets to send to) and its checks."""
