// The CNI plugin's Kubernetes client is the shared one (the node agent uses it too).
export * from '../util/kube.ts';
