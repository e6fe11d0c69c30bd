/** The image store of tetherd: docker load of save and OCI tarballs into root disks, in Docker's shapes. */
export { ImageStore, type ImageRecord, type ImageStoreOptions, type LoadResult } from './image-store.ts';
export { dockerImageDeleteResponse, dockerImageInspect, dockerImageSummary } from './docker-json.ts';
