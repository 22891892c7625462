"""Running a plan: worker environments and launch, supervision, the hub, parallel
lanes on disjoint GPUs, data-parallel shards, resume and interrupts."""
