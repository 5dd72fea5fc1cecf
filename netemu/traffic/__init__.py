"""The traffic wing: what runs in and through the network: workloads, probes, traces, replay."""
