/**
 * The BraTS segmentation task, shared by the datasets that produce BraTS-style cases: the four MR
 * modalities and the evaluation regions whole tumour (WT = {1, 2, 4}), tumour core (TC = {1, 4}) and
 * enhancing tumour (ET = {4}) of the 2017–2022 label scheme (Menze et al. 2015; Bakas et al. 2018).
 */
import type { SegmentationTask } from '../types.js';

export const BRATS_CHANNELS = ['t1', 't1ce', 't2', 'flair'] as const;

/** BraTS evaluation regions; painting in order WT(2) < TC(1) < ET(4) rebuilds the label map. */
export const BRATS_TASK: SegmentationTask = {
  kind: 'regions',
  regions: [
    { name: 'WT', labels: [1, 2, 4], paint: 2 },
    { name: 'TC', labels: [1, 4], paint: 1 },
    { name: 'ET', labels: [4], paint: 4 },
  ],
};
