/**
 * core/io/ — Files: NIfTI reading and writing with the image's geometry, the BraTS case-folder layout (read by the
 * brats and synthetic-brats datasets), and saved models (model.json beside weights.bin).
 */
export * from './nifti.js';
export * from './brats-folder.js';
export * from './model-store.js';
