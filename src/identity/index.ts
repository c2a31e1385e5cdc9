// Workload identity on the node: certificates per service account from the mesh CA.
export { CertManager, type CertManagerEvents, type CertManagerOptions, type CertSnapshot, type CertState, type WorkloadCert } from './cert-manager.ts';
export { CAClient, type CAClientOptions } from './ca-client.ts';
