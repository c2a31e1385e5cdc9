// Workload identity: certificates per service account from the mesh CA, kept and renewed for
// whichever proxy holds them (the node agent today, the waypoint next).
export { CertManager, type CertManagerEvents, type CertManagerOptions, type CertSnapshot, type CertState, type WorkloadCert } from './cert-manager.ts';
export { CAClient, caClientMode, type CAClientOptions, type TokenSource } from './ca-client.ts';
