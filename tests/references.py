"""Slow, obviously-correct per-item references shared by tests and bench scripts (one section per area)."""

# ----------------------------------------------------------------------------------------------------------
# models (helper MODELS): per-class heads and semantic aggregation, one class / pixel / prototype at a time.
# ----------------------------------------------------------------------------------------------------------
import math
from collections.abc import Sequence

import torch


def reference_per_class_heads(features: torch.Tensor, class_heads: Sequence[torch.nn.Module]) -> torch.Tensor:
    """C independent single-output heads run one after another. features (B,F,h,w) -> (B,C,h,w)."""
    maps = []
    for head in class_heads:
        maps.append(head(features))  # (B, 1, h, w)
    return torch.cat(maps, dim=1)


def reference_semantic_aggregation(
    aggregation: torch.nn.Module,
    features: torch.Tensor,
    prototypes: torch.Tensor | None,
    prototype_valid: torch.Tensor | None,
) -> torch.Tensor:
    """SemanticAggregation recomputed pixel by pixel and prototype by prototype from its weights.

    features (B,F,h,w), prototypes (C,K,D) or None, prototype_valid (C,K) bool or None -> fused (B,F,h,w).
    """
    query_w, query_b = aggregation.query.weight[:, :, 0, 0], aggregation.query.bias
    key_w, key_b = aggregation.key.weight, aggregation.key.bias
    value_w, value_b = aggregation.value.weight, aggregation.value.bias
    context_w, context_b = aggregation.context.weight[:, :, 0, 0], aggregation.context.bias
    fuse_w, fuse_b = aggregation.fuse.weight[:, :, 0, 0], aggregation.fuse.bias
    batch, channels, height, width = features.shape
    valid_list = []
    if prototypes is not None:
        num_classes, num_prototypes, _ = prototypes.shape
        for c in range(num_classes):
            for k in range(num_prototypes):
                if prototype_valid is None or bool(prototype_valid[c, k]):
                    valid_list.append(prototypes[c, k])
    fused = torch.zeros_like(features)
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                pixel = features[b, :, i, j]
                context = torch.zeros(channels, dtype=features.dtype)
                if valid_list:
                    query = query_w @ pixel + query_b
                    scores = []
                    for prototype in valid_list:
                        key = key_w @ prototype + key_b
                        scores.append(float(query @ key))
                    if aggregation.attention == "softmax":
                        scaled = [s / math.sqrt(query.numel()) for s in scores]
                        top = max(scaled)
                        exps = [math.exp(s - top) for s in scaled]
                        weights = [e / sum(exps) for e in exps]
                    else:
                        weights = [s * num_classes / num_prototypes for s in scores]
                    attended = torch.zeros_like(query)
                    for weight, prototype in zip(weights, valid_list, strict=True):
                        attended = attended + weight * (value_w @ prototype + value_b)
                    context = context_w @ attended + context_b
                fused[b, :, i, j] = fuse_w @ torch.cat([pixel, context]) + fuse_b
    return fused


# ----------------------------------------------------------------------------------------------------------
# memory + losses (helper MEMORY): region masks, masked pooling, sequential enqueue, per-group k-means and the
# semantic contrast loss, one image / class / entry / query at a time with plain Python loops.
# ----------------------------------------------------------------------------------------------------------
def reference_region_masks(coarse_cams: torch.Tensor) -> torch.Tensor:
    """Per-pixel softmax over classes; a class region is where its map exceeds its mean. (B,C,h,w) -> bool."""
    batch, num_classes, height, width = coarse_cams.shape
    masks = torch.zeros(batch, num_classes, height, width, dtype=torch.bool)
    for b in range(batch):
        probabilities = [[[0.0] * width for _ in range(height)] for _ in range(num_classes)]
        for i in range(height):
            for j in range(width):
                scores = [float(coarse_cams[b, c, i, j]) for c in range(num_classes)]
                top = max(scores)
                exps = [math.exp(s - top) for s in scores]
                for c in range(num_classes):
                    probabilities[c][i][j] = exps[c] / sum(exps)
        for c in range(num_classes):
            mean = sum(sum(row) for row in probabilities[c]) / (height * width)
            for i in range(height):
                for j in range(width):
                    masks[b, c, i, j] = probabilities[c][i][j] > mean
    return masks


def reference_masked_average_pool(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per image and class: weighted mean of the feature vectors inside the (nearest-resized) mask.

    features (B,D,h,w), masks (B,C,H,W) -> (B,C,D); zeros for an empty mask.
    """
    batch, dim, height, width = features.shape
    num_classes, mask_height, mask_width = masks.shape[1:]
    pooled = torch.zeros(batch, num_classes, dim, dtype=features.dtype)
    for b in range(batch):
        for c in range(num_classes):
            total = torch.zeros(dim, dtype=features.dtype)
            area = 0.0
            for i in range(height):
                for j in range(width):
                    # nearest: source pixel floor(i * H / h), as in F.interpolate(mode="nearest")
                    source_i = min(int(math.floor(i * mask_height / height)), mask_height - 1)
                    source_j = min(int(math.floor(j * mask_width / width)), mask_width - 1)
                    weight = float(masks[b, c, source_i, source_j])
                    total = total + weight * features[b, :, i, j]
                    area += weight
            if area > 0:
                pooled[b, c] = total / area
    return pooled


def reference_enqueue(
    queue: torch.Tensor,
    pointer: torch.Tensor,
    written: torch.Tensor,
    embeddings: torch.Tensor,
    class_ids: torch.Tensor,
    update: str,
    momentum: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Write the entries one at a time, in input order, tracking every written slot explicitly.

    queue (C,L,D), pointer (C,), written (C,L) bool, embeddings (N,D), class_ids (N,)
    -> new (queue, pointer, written).
    """
    queue, pointer, written = queue.clone(), pointer.clone(), written.clone()
    queue_length = queue.shape[1]
    for n in range(embeddings.shape[0]):
        c = int(class_ids[n])
        slot = int(pointer[c])
        if update == "ema" and bool(written[c, slot]):
            queue[c, slot] = momentum * queue[c, slot] + (1.0 - momentum) * embeddings[n]
        else:
            queue[c, slot] = embeddings[n]
        written[c, slot] = True
        pointer[c] = (slot + 1) % queue_length
    return queue, pointer, written


def reference_kmeans(
    points: torch.Tensor, valid: torch.Tensor, num_clusters: int, num_iters: int, init_indices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd k-means group by group and point by point, from the given initial indices.

    points (G,N,D), valid (G,N), init_indices (G,K) -> centres (G,K,D) (zeros when invalid),
    centre_valid (G,K).
    Ties go to the lowest centre index; a centre with no point keeps its position.
    """
    num_groups, num_points, dim = points.shape
    centres_out = torch.zeros(num_groups, num_clusters, dim, dtype=points.dtype)
    valid_out = torch.zeros(num_groups, num_clusters, dtype=torch.bool)
    for g in range(num_groups):
        usable = [n for n in range(num_points) if bool(valid[g, n])]
        num_centres = min(num_clusters, len(usable))
        centres = [points[g, int(init_indices[g, k])].clone() for k in range(num_centres)]
        for _ in range(num_iters):
            members = [[] for _ in range(num_centres)]
            for n in usable:
                distances = [float(((points[g, n] - centre) ** 2).sum()) for centre in centres]
                nearest = min(range(num_centres), key=lambda k: distances[k])  # first minimum on ties
                members[nearest].append(n)
            for k in range(num_centres):
                if members[k]:
                    centres[k] = sum(points[g, n] for n in members[k]) / len(members[k])
        for k in range(num_centres):
            centres_out[g, k] = centres[k]
            valid_out[g, k] = True
    return centres_out, valid_out


def _reference_unit(vector: torch.Tensor) -> list[float]:
    values = [float(x) for x in vector]
    norm = math.sqrt(sum(x * x for x in values))
    return [x / max(norm, 1e-12) for x in values]


def _reference_dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def reference_per_class_contrast(
    queries: torch.Tensor, memory: torch.Tensor, memory_valid: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE per query, per class, per positive, per negative with math.exp / math.log.

    queries (N,D), memory (C,L,D), memory_valid (C,L) -> loss (N,C) float64 (0 where undefined),
    defined (N,C).
    """
    num_queries, num_classes = queries.shape[0], memory.shape[0]
    keys = [
        [_reference_unit(memory[c, slot]) for slot in range(memory.shape[1]) if bool(memory_valid[c, slot])]
        for c in range(num_classes)
    ]
    loss = torch.zeros(num_queries, num_classes, dtype=torch.float64)
    defined = torch.zeros(num_queries, num_classes, dtype=torch.bool)
    for n in range(num_queries):
        query = _reference_unit(queries[n])
        for c in range(num_classes):
            if not keys[c]:
                continue
            negatives = [key for other in range(num_classes) if other != c for key in keys[other]]
            terms = []
            for positive in keys[c]:
                positive_logit = _reference_dot(query, positive) / temperature
                negative_logits = [_reference_dot(query, key) / temperature for key in negatives]
                top = max([positive_logit, *negative_logits])  # shift: exp never overflows
                denominator = math.exp(positive_logit - top) + sum(math.exp(s - top) for s in negative_logits)
                # -log(exp(s_p) / denominator), with both shifted by top
                terms.append(math.log(denominator) - (positive_logit - top))
            loss[n, c] = sum(terms) / len(terms)
            defined[n, c] = True
    return loss, defined


def reference_mixup_contrast_loss(
    region_embeddings: torch.Tensor,
    classes: torch.Tensor,
    image_index: torch.Tensor,
    memory: torch.Tensor,
    memory_valid: torch.Tensor,
    temperature: float,
    lambdas: torch.Tensor,
    partners: torch.Tensor,
) -> float:
    """Mixed-query contrast loss, query by query: mean over each image's contributing queries, summed."""
    losses_per_image: dict[int, list[float]] = {}
    for n in range(region_embeddings.shape[0]):
        partner = int(partners[n])
        mix = float(lambdas[n])
        query = _reference_unit(region_embeddings[n])
        partner_query = _reference_unit(region_embeddings[partner])
        mixed = torch.tensor([mix * a + (1.0 - mix) * b for a, b in zip(query, partner_query, strict=True)])
        loss, defined = reference_per_class_contrast(mixed[None], memory, memory_valid, temperature)
        own_class, partner_class = int(classes[n]), int(classes[partner])
        terms = []
        if bool(defined[0, own_class]):
            terms.append(mix * float(loss[0, own_class]))
        if bool(defined[0, partner_class]):
            terms.append((1.0 - mix) * float(loss[0, partner_class]))
        if terms:
            losses_per_image.setdefault(int(image_index[n]), []).append(sum(terms))
    return sum(sum(values) / len(values) for values in losses_per_image.values())


def reference_release_mixup_contrast_loss(
    region_embeddings: torch.Tensor,
    classes: torch.Tensor,
    image_index: torch.Tensor,
    memory: torch.Tensor,
    memory_valid: torch.Tensor,
    temperature: float,
    lambdas: torch.Tensor,
    partners: torch.Tensor,
    denominator_floor: float | None,
) -> torch.Tensor:
    """The public code's mixed contrast loss, query by query and positive by positive, in differentiable
    torch scalars: the RAW embeddings are mixed (l*own + (1-l)*partner) and the mixture L2-normalised; the
    logits over all valid memory entries are shifted by their (detached) maximum; each shifted denominator
    exp(s_p) + sum_n exp(s_n) is clamped at the floor (when given) before the log; a class without valid
    entries drops its term. Mean over each image's contributing queries, summed over images."""
    num_classes, queue_length, _ = memory.shape
    keys = [
        [
            memory[c, slot] / memory[c, slot].norm()
            for slot in range(queue_length)
            if bool(memory_valid[c, slot])
        ]
        for c in range(num_classes)
    ]
    losses_per_image: dict[int, list[torch.Tensor]] = {}
    for n in range(region_embeddings.shape[0]):
        mix, partner = float(lambdas[n]), int(partners[n])
        mixed = mix * region_embeddings[n] + (1.0 - mix) * region_embeddings[partner]
        query = mixed / mixed.norm().clamp_min(1e-12)
        logits = [[torch.dot(query, key) / temperature for key in class_keys] for class_keys in keys]
        largest = max(float(logit.detach()) for class_logits in logits for logit in class_logits)
        terms = []
        for class_index, weight in ((int(classes[n]), mix), (int(classes[partner]), 1.0 - mix)):
            if not logits[class_index]:
                continue
            negatives = [logit for c in range(num_classes) if c != class_index for logit in logits[c]]
            positive_losses = []
            for positive in logits[class_index]:
                denominator = torch.exp(positive - largest)
                for negative in negatives:
                    denominator = denominator + torch.exp(negative - largest)
                if denominator_floor is not None:
                    denominator = denominator.clamp(min=denominator_floor)
                positive_losses.append(-((positive - largest) - torch.log(denominator)))
            terms.append(weight * sum(positive_losses) / len(positive_losses))
        if terms:
            losses_per_image.setdefault(int(image_index[n]), []).append(sum(terms))
    return sum(sum(values) / len(values) for values in losses_per_image.values())


# ----------------------------------------------------------------------------------------------------------
# data (helper DATA): the VOC colour map and the 255 border band, one entry / pixel at a time.
# ----------------------------------------------------------------------------------------------------------
def reference_voc_palette() -> list[tuple[int, int, int]]:
    """The VOC colour map as the devkit's VOClabelcolormap.m builds it, entry by entry."""
    palette = []
    for index in range(256):
        red = green = blue = 0
        code = index
        for level in range(8):
            red |= ((code >> 0) & 1) << (7 - level)
            green |= ((code >> 1) & 1) << (7 - level)
            blue |= ((code >> 2) & 1) << (7 - level)
            code >>= 3
        palette.append((red, green, blue))
    return palette


def reference_border_band(instance_map: Sequence[Sequence[int]]) -> list[list[bool]]:
    """A pixel is on the band when any pixel of its 3x3 neighbourhood (inside the image) differs."""
    height, width = len(instance_map), len(instance_map[0])
    band = [[False] * width for _ in range(height)]
    for i in range(height):
        for j in range(width):
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    y, x = i + di, j + dj
                    if 0 <= y < height and 0 <= x < width and instance_map[y][x] != instance_map[i][j]:
                        band[i][j] = True
    return band


# ----------------------------------------------------------------------------------------------------------
# pseudo (issue 3, CAMs -> pseudo masks): multi-scale CAMs one image / scale / flip at a time, CAM threshold
# sweep and mask confusion one pixel at a time, the public saliency rule one pixel at a time.
# ----------------------------------------------------------------------------------------------------------
def reference_multiscale_cams(
    cam_fn, image: torch.Tensor, scales: Sequence[float], flip: bool
) -> torch.Tensor:
    """One image (3,H,W): every scale and flip separately, ReLU'd maps resized back and summed -> (C,H,W)."""
    height, width = image.shape[-2:]
    total = None
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = torch.nn.functional.interpolate(image[None], size, mode="bilinear", align_corners=False)
        variants = [(scaled, False), (scaled.flip(-1), True)] if flip else [(scaled, False)]
        for variant, mirrored in variants:
            cams = cam_fn(variant).float().relu()
            cams = torch.nn.functional.interpolate(
                cams, (height, width), mode="bilinear", align_corners=False
            )[0]
            if mirrored:
                cams = cams.flip(-1)
            total = cams if total is None else total + cams
    return total


def _reference_iou(confusion: list[list[int]]) -> list[float]:
    size = len(confusion)
    iou = []
    for k in range(size):
        true_positive = confusion[k][k]
        union = sum(confusion[k]) + sum(confusion[r][k] for r in range(size)) - true_positive
        iou.append(true_positive / union if union > 0 else float("nan"))
    return iou


def _reference_mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def reference_cam_sweep(
    scores: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], thresholds: Sequence[float]
) -> tuple[list[float], int, list[float]]:
    """Per threshold one confusion matrix over all images, pixel by pixel -> (mIoU per threshold, best,
    per-class IoU at the best threshold).

    scores: per image (C,H,W) in [0,1]; targets: per image (H,W) with 255 ignored. A pixel is class
    argmax+1 when its top score exceeds the threshold, else background.
    """
    num_labels = scores[0].shape[0] + 1
    mious, ious = [], []
    for threshold in thresholds:
        confusion = [[0] * num_labels for _ in range(num_labels)]
        for score, target in zip(scores, targets, strict=True):
            for i in range(target.shape[0]):
                for j in range(target.shape[1]):
                    truth = int(target[i, j])
                    if truth == 255:
                        continue
                    pixel = score[:, i, j].tolist()
                    top = max(pixel)
                    prediction = pixel.index(top) + 1 if top > threshold else 0
                    confusion[truth][prediction] += 1
        ious.append(_reference_iou(confusion))
        mious.append(_reference_mean(ious[-1]))
    best = max(range(len(mious)), key=lambda t: (-1.0 if math.isnan(mious[t]) else mious[t], -t))
    return mious, best, ious[best]


def reference_mask_scores(
    masks: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], num_labels: int
) -> tuple[list[float], float]:
    """Per-class IoU where neither mask nor target is 255; the fraction of valid pixels the masks ignore."""
    confusion = [[0] * num_labels for _ in range(num_labels)]
    valid = ignored = 0
    for mask, target in zip(masks, targets, strict=True):
        for i in range(target.shape[0]):
            for j in range(target.shape[1]):
                truth, label = int(target[i, j]), int(mask[i, j])
                if truth == 255:
                    continue
                valid += 1
                if label == 255:
                    ignored += 1
                    continue
                confusion[truth][label] += 1
    return _reference_iou(confusion), ignored / valid


def reference_saliency_mask(
    class_scores, classes, saliency, conflict=0.9, attention=0.8, background_saliency=32, min_foreground=0.01
) -> list[list[int]]:
    """The public saliency rule, pixel by pixel. class_scores (K,H,W), classes (K,), saliency (H,W) 0..255."""
    num_classes = len(classes)
    height, width = saliency.shape
    mask = [[0] * width for _ in range(height)]
    foreground = 0
    for i in range(height):
        for j in range(width):
            channels = [1.0 - float(saliency[i, j]) / 255.0] + [
                float(class_scores[k, i, j]) for k in range(num_classes)
            ]
            best = 0
            for k in range(1, len(channels)):
                if channels[k] > channels[best]:
                    best = k
            label = 0 if best == 0 else int(classes[best - 1]) + 1
            if sum(1 for value in channels if value > conflict) > 1:
                label = 255
            salient = float(saliency[i, j]) >= background_saliency or any(
                float(class_scores[k, i, j]) > attention for k in range(num_classes)
            )
            if label == 0 and salient:
                label = 255
            if label not in (0, 255):
                foreground += 1
            mask[i][j] = label
    if foreground < min_foreground * height * width:
        mask = [[255] * width for _ in range(height)]
    return mask


# ----------------------------------------------------------------------------------------------------------
# attention accumulation (issue 3, OAA): crop paste-back one grid pixel at a time, accumulation one image /
# class at a time.
# ----------------------------------------------------------------------------------------------------------
def _reference_bilinear_border(values: torch.Tensor, row: float, column: float) -> float:
    """Bilinear sample of a (h,w) map at pixel coordinates (centres at integers), clamped to the edges."""
    height, width = values.shape
    row, column = min(max(row, 0.0), height - 1.0), min(max(column, 0.0), width - 1.0)
    top, left = math.floor(row), math.floor(column)
    bottom, right = min(top + 1, height - 1), min(left + 1, width - 1)
    down, across = row - top, column - left
    return (
        float(values[top, left]) * (1 - down) * (1 - across)
        + float(values[top, right]) * (1 - down) * across
        + float(values[bottom, left]) * down * (1 - across)
        + float(values[bottom, right]) * down * across
    )


def reference_paste_crop(
    crop_map: torch.Tensor, crop_box: Sequence[float], flipped: bool, resolution: int
) -> list[list[float]]:
    """One crop's (h,w) map onto the S x S grid of its image: for each grid pixel centre (u, v) in image
    coordinates, its place in the crop window (mirrored when flipped), sampled there; 0 outside the window."""
    x0, y0, x1, y1 = (float(value) for value in crop_box)
    height, width = crop_map.shape
    grid = [[0.0] * resolution for _ in range(resolution)]
    for i in range(resolution):
        for j in range(resolution):
            u, v = (j + 0.5) / resolution, (i + 0.5) / resolution
            across, down = (u - x0) / (x1 - x0), (v - y0) / (y1 - y0)  # 0..1 inside the crop
            if flipped:
                across = 1.0 - across
            if not (0.0 <= across <= 1.0 and 0.0 <= down <= 1.0):
                continue
            grid[i][j] = _reference_bilinear_border(crop_map, down * height - 0.5, across * width - 0.5)
    return grid


def reference_accumulate(
    attention: list,
    written: list,
    indices: Sequence[int],
    cams: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    crop_boxes: torch.Tensor,
    flipped: Sequence[bool],
    min_probability: float,
    write_missing: bool,
) -> None:
    """OAA step, one image and class at a time, in place: attention[n][c] (S x S nested lists of ints),
    written[n][c] bools. A tagged class whose probability passes (or never written, when write_missing)
    gets its ReLU'd map scaled to a maximum of 255, pasted, rounded and max-ed into the store."""
    resolution = len(attention[0][0])
    for b, row in enumerate(indices):
        for c in range(cams.shape[1]):
            if labels[b, c] <= 0:
                continue
            probability = 1.0 / (1.0 + math.exp(-float(logits[b, c])))
            if probability < min_probability and not (write_missing and not written[row][c]):
                continue
            positive = cams[b, c].double().clamp(min=0)
            peak = float(positive.max())
            scaled = positive / peak * 255.0 if peak > 0 else positive
            pasted = reference_paste_crop(scaled, crop_boxes[b].tolist(), bool(flipped[b]), resolution)
            for i in range(resolution):
                for j in range(resolution):
                    attention[row][c][i][j] = max(attention[row][c][i][j], round(pasted[i][j]))
            written[row][c] = True


# ----------------------------------------------------------------------------------------------------------
# segmentation stage (helper SEG): dilated 3x3 classifiers, dataset-level confusion, test-time augmentation.
# ----------------------------------------------------------------------------------------------------------
def reference_dilated_conv3x3(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dilation: int
) -> torch.Tensor:
    """A 3x3 convolution with dilation d and zero padding d, one output pixel and tap at a time.

    features (B,F,h,w), weight (K,F,3,3), bias (K,) -> (B,K,h,w).
    """
    batch, _, height, width = features.shape
    output = torch.zeros(batch, weight.shape[0], height, width, dtype=features.dtype)
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                total = bias.clone()
                for ky in range(3):
                    for kx in range(3):
                        y, x = i + (ky - 1) * dilation, j + (kx - 1) * dilation
                        if 0 <= y < height and 0 <= x < width:
                            total = total + weight[:, :, ky, kx] @ features[b, :, y, x]
                output[b, :, i, j] = total
    return output


def reference_confusion(
    predictions: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], num_outputs: int, ignore_index: int
) -> list[list[int]]:
    """Confusion counts [ground truth][prediction] over every non-ignored pixel of every image."""
    confusion = [[0] * num_outputs for _ in range(num_outputs)]
    for prediction, target in zip(predictions, targets, strict=True):
        for predicted_row, target_row in zip(prediction.tolist(), target.tolist(), strict=True):
            for predicted, truth in zip(predicted_row, target_row, strict=True):
                if truth != ignore_index:
                    confusion[truth][predicted] += 1
    return confusion


def reference_miou(confusion: list[list[int]]) -> tuple[float, list[float]]:
    """Mean IoU over classes present in prediction or ground truth, and the per-class IoU (NaN if absent)."""
    ious = []
    for k in range(len(confusion)):
        true_positive = confusion[k][k]
        false_negative = sum(confusion[k]) - true_positive
        false_positive = sum(row[k] for row in confusion) - true_positive
        union = true_positive + false_positive + false_negative
        ious.append(true_positive / union if union > 0 else float("nan"))
    present = [iou for iou in ious if not math.isnan(iou)]
    return sum(present) / len(present), ious


def reference_tta_logits(
    net: torch.nn.Module, images: torch.Tensor, scales: Sequence[float], flip: bool
) -> torch.Tensor:
    """Test-time augmentation one image, scale and flip at a time: each view's logits resized back to
    the image size (bilinear), mirrored views mirrored back, all views averaged. images (B,3,H,W)."""
    import torch.nn.functional as F

    outputs = []
    for image in images:
        height, width = image.shape[-2:]
        views = []
        for scale in scales:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            scaled = image[None]
            if size != (height, width):
                scaled = F.interpolate(scaled, size=size, mode="bilinear", align_corners=False)
            mirrors = [False, True] if flip else [False]
            for mirrored in mirrors:
                view_input = torch.flip(scaled, dims=[3]) if mirrored else scaled
                logits = net(view_input)
                if mirrored:
                    logits = torch.flip(logits, dims=[3])
                if logits.shape[-2:] != (height, width):
                    logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
                views.append(logits[0])
        outputs.append(sum(views) / len(views))
    return torch.stack(outputs)


# ----------------------------------------------------------------------------------------------------------
# memory, continued: k-means inertia and greedy k-means++ second-centre probabilities, one item at a time.
# ----------------------------------------------------------------------------------------------------------
def reference_kmeans_inertia(
    points: torch.Tensor, valid: torch.Tensor, centres: torch.Tensor, centre_valid: torch.Tensor
) -> list[float]:
    """Per group, the sum over valid points of the squared distance to the nearest valid centre, in Python
    floats. points (G,N,D), valid (G,N), centres (G,K,D), centre_valid (G,K) -> G floats (inf when a group
    has valid points but no valid centre)."""
    inertias = []
    for g in range(points.shape[0]):
        usable_centres = [centres[g, k] for k in range(centres.shape[1]) if bool(centre_valid[g, k])]
        total = 0.0
        for n in range(points.shape[1]):
            if bool(valid[g, n]):
                distances = [float(((points[g, n] - centre) ** 2).sum()) for centre in usable_centres]
                total += min(distances, default=math.inf)
        inertias.append(total)
    return inertias


def reference_greedy_plusplus_second_centre(
    points: Sequence[Sequence[float]], first: int, num_candidates: int
) -> list[float]:
    """Probability that each point becomes the second k-means++ centre once ``first`` is the first one.

    Enumerates every ordered tuple of ``num_candidates`` independent draws, each point n != first drawn with
    probability D(n)^2 / sum D^2 (D: distance to the first centre); the tuple's winner is the candidate whose
    addition leaves the smallest sum over all points of the squared distance to the nearest centre, the
    earliest draw on ties. num_candidates=1 is plain k-means++."""
    import itertools

    def squared(a: Sequence[float], b: Sequence[float]) -> float:
        return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))

    closest = [squared(point, points[first]) for point in points]
    total = sum(closest)
    draw_probability = [value / total for value in closest]
    result = [0.0] * len(points)
    for draws in itertools.product(range(len(points)), repeat=num_candidates):
        probability = math.prod(draw_probability[n] for n in draws)
        if probability == 0.0:
            continue
        potentials = [
            sum(min(closest[m], squared(points[m], points[c])) for m in range(len(points))) for c in draws
        ]
        result[draws[potentials.index(min(potentials))]] += probability
    return result
