"""The original training step, re-implemented for benchmarking only (not part of the package).

What the 2nd-place RSNA solution trained (its fork of yhenon/pytorch-retinanet, PyTorch 0.4 era), rebuilt in plain
torch so it runs on a CPU or any GPU without the C/CUDA NMS extension:
- encoder: backbone stages 1-4 (C2..C5), the grey image concatenated to 3 channels in `forward`;
- FPN with P2..P7 (P2 included: `use_l2_features=True`), 256 channels, nearest upsampling;
- heads: 4 conv+ReLU, dropout 0.5 before the output conv, *sigmoid* class scores (probabilities, not logits);
- a global 3-class head on C5 (max-pool 2, 3x3 conv, ReLU, avg+max pool, dropout, linear, log-softmax), NLL loss x 0.1;
- anchors rebuilt in numpy on every forward and copied to the device (sizes 2^(l+2), ratios 0.5/1/2, 3 scales);
- focal loss computed image by image in a Python loop (IoU, target assignment, alpha 0.25, gamma 2, clamped
  probabilities, smooth-L1 with beta 1/9 on deltas divided by 0.1/0.1/0.2/0.2); negative images scored as all-background;
- BatchNorm frozen the way it did it: the BN modules put in eval mode after `train()` (affine weights still learn);
- fp32, NCHW, Adam, gradient norm clipped at 0.05.
"""
import math
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['OriginalRetinaNet', 'original_encoder', 'original_step', 'pad_annotations']

# ---------------------------------------------------------------- encoder
class _Stages(nn.Module):
    "Backbone stem + 4 stages returning C2..C5, with the grey->RGB concatenation the original did in `forward`"
    def __init__(self, stem, stages, channels):
        super().__init__()
        self.stem, self.stages, self.fpn_sizes = stem, nn.ModuleList(stages), channels
    def forward(self, x):
        x = self.stem(torch.cat([x, x, x], dim=1))
        outs = []
        for s in self.stages:
            x = s(x); outs.append(x)
        return outs

def original_encoder(name:str):
    "The original's encoder for backbone `name` (pretrainedmodels SE-ResNeXt or torchvision ResNet), random weights"
    if name.startswith('se_resnext'):
        from pretrainedmodels.models import senet
        m = getattr(senet, name)(num_classes=1000, pretrained=None)
        stem, stages = m.layer0, [m.layer1, m.layer2, m.layer3, m.layer4]
    elif name == 'resnet_tiny':   # the package's test backbone (torchvision child names): CPU dry runs only
        from pneumonia_kit.backbones import TinyResNet
        m = TinyResNet()
        stem, stages = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool), [m.layer1, m.layer2, m.layer3, m.layer4]
    elif name in ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152'):
        import torchvision
        m = getattr(torchvision.models, name)(weights=None)
        stem, stages = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool), [m.layer1, m.layer2, m.layer3, m.layer4]
    else: raise ValueError(f'original_encoder: no original encoder for backbone {name!r}')
    chans = [(s[-1].conv3 if hasattr(s[-1], 'conv3') else s[-1].conv2).out_channels for s in stages]
    return _Stages(stem, stages, chans)

# ---------------------------------------------------------------- FPN and heads
class _FPN(nn.Module):
    "P2..P7 pyramid in the original's layout (lateral 1x1, nearest x2 upsample, 3x3 smoothing; P6 from C5, P7 from P6)"
    def __init__(self, c2, c3, c4, c5, f=256):
        super().__init__()
        self.p5_1, self.p5_2 = nn.Conv2d(c5, f, 1), nn.Conv2d(f, f, 3, padding=1)
        self.p4_1, self.p4_2 = nn.Conv2d(c4, f, 1), nn.Conv2d(f, f, 3, padding=1)
        self.p3_1, self.p3_2 = nn.Conv2d(c3, f, 1), nn.Conv2d(f, f, 3, padding=1)
        self.p2_1, self.p2_2 = nn.Conv2d(c2, f, 1), nn.Conv2d(f, f, 3, padding=1)
        self.p6, self.p7 = nn.Conv2d(c5, f, 3, stride=2, padding=1), nn.Conv2d(f, f, 3, stride=2, padding=1)
    def forward(self, cs):
        c2, c3, c4, c5 = cs
        up = lambda t: F.interpolate(t, scale_factor=2, mode='nearest')
        p5 = self.p5_1(c5)
        p4 = self.p4_1(c4) + up(p5)
        p3 = self.p3_1(c3) + up(p4)
        p2 = self.p2_1(c2) + up(p3)
        p6 = self.p6(c5)
        p7 = self.p7(F.relu(p6))
        return [self.p2_2(p2), self.p3_2(p3), self.p4_2(p4), self.p5_2(p5), p6, p7]

def _tower(f=256):
    return nn.Sequential(*[m for _ in range(4) for m in (nn.Conv2d(f, f, 3, padding=1), nn.ReLU())])

class _RegressionHead(nn.Module):
    def __init__(self, f=256, a=9):
        super().__init__()
        self.tower, self.output = _tower(f), nn.Conv2d(f, a*4, 3, padding=1)
    def forward(self, x):
        out = self.output(self.tower(x)).permute(0, 2, 3, 1)
        return out.contiguous().view(out.shape[0], -1, 4)

class _ClassificationHead(nn.Module):
    def __init__(self, f=256, a=9, n_classes=1, dropout=0.5):
        super().__init__()
        self.tower, self.output, self.dropout, self.n_classes = _tower(f), nn.Conv2d(f, a*n_classes, 3, padding=1), dropout, n_classes
    def forward(self, x):
        out = F.dropout(self.tower(x), self.dropout, self.training)
        out = torch.sigmoid(self.output(out)).permute(0, 2, 3, 1)
        return out.contiguous().view(x.shape[0], -1, self.n_classes)

class _GlobalHead(nn.Module):
    def __init__(self, c5, f=256, n_classes=3, dropout=0.5):
        super().__init__()
        self.conv, self.fc, self.dropout = nn.Conv2d(c5, f, 3), nn.Linear(2*f, n_classes), dropout
    def forward(self, x):
        out = F.relu(self.conv(F.max_pool2d(x, 2)))
        out = torch.cat([F.avg_pool2d(out, out.shape[2:]), F.max_pool2d(out, out.shape[2:])], 1).flatten(1)
        return F.log_softmax(self.fc(F.dropout(out, self.dropout, self.training)), dim=-1)

# ---------------------------------------------------------------- anchors (numpy, every forward)
def _base_anchors(size, ratios, scales):
    wh = size * np.tile(scales, (2, len(ratios))).T
    areas = wh[:, 0] * wh[:, 1]
    w = np.sqrt(areas / np.repeat(ratios, len(scales))); h = w * np.repeat(ratios, len(scales))
    return np.stack([-w/2, -h/2, w/2, h/2], 1)

def _anchors(shape, levels=(2, 3, 4, 5, 6, 7)):
    ratios, scales = np.array([0.5, 1, 2]), np.array([2**0, 2**(1/3), 2**(2/3)])
    out = []
    for l in levels:
        fh, fw = [(s + 2**l - 1) // 2**l for s in shape]
        sx, sy = np.meshgrid((np.arange(fw) + 0.5) * 2**l, (np.arange(fh) + 0.5) * 2**l)
        shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], 1)
        out.append((_base_anchors(2**(l+2), ratios, scales)[None] + shifts[:, None]).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)

# ---------------------------------------------------------------- the per-image focal loss
def _iou(a, b):
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = (torch.min(a[:, 2:3], b[:, 2]) - torch.max(a[:, 0:1], b[:, 0])).clamp(min=0)
    ih = (torch.min(a[:, 3:4], b[:, 3]) - torch.max(a[:, 1:2], b[:, 1])).clamp(min=0)
    ua = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None] + area - iw * ih
    return iw * ih / ua.clamp(min=1e-8)

def focal_loss_per_image(classifications, regressions, anchors, annotations, alpha=0.25, gamma=2.0):
    "The original's loss: a Python loop over the batch, dense IoU and target tensors built per image"
    dev = classifications.device
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
    cls_losses, reg_losses = [], []
    for j in range(classifications.shape[0]):
        cls, reg = classifications[j].clamp(1e-4, 1 - 1e-4), regressions[j]
        ann = annotations[j][annotations[j, :, 4] != -1]
        if ann.shape[0] == 0:
            iou, ann = torch.zeros(anchors.shape[0], 1, device=dev), torch.full((1, 5), -1.0, device=dev)
        else: iou = _iou(anchors, ann[:, :4])
        iou_max, iou_arg = iou.max(dim=1)
        targets = torch.full(cls.shape, -1.0, device=dev)
        targets[iou_max < 0.4] = 0
        pos = iou_max >= 0.5
        n_pos = pos.sum()
        assigned = ann[iou_arg]
        targets[pos] = 0
        targets[pos, assigned[pos, 4].long()] = 1
        af = torch.where(targets == 1, torch.full_like(targets, alpha), torch.full_like(targets, 1 - alpha))
        fw = af * torch.where(targets == 1, 1 - cls, cls) ** gamma
        bce = -(targets * torch.log(cls) + (1 - targets) * torch.log(1 - cls))
        l = torch.where(targets != -1, fw * bce, torch.zeros_like(bce))
        cls_losses.append(l.sum() / n_pos.float().clamp(min=1))
        if n_pos > 0:
            a = assigned[pos]
            gw, gh = (a[:, 2] - a[:, 0]), (a[:, 3] - a[:, 1])
            gx, gy = a[:, 0] + 0.5 * gw, a[:, 1] + 0.5 * gh
            gw, gh = gw.clamp(min=1), gh.clamp(min=1)
            t = torch.stack([(gx - ax[pos]) / aw[pos], (gy - ay[pos]) / ah[pos],
                             torch.log(gw / aw[pos]), torch.log(gh / ah[pos])]).t()
            t = t / torch.tensor([[0.1, 0.1, 0.2, 0.2]], device=dev)
            d = (t - reg[pos]).abs()
            reg_losses.append(torch.where(d <= 1/9, 0.5 * 9 * d**2, d - 0.5/9).mean())
        else: reg_losses.append(torch.tensor(0.0, device=dev))
    return torch.stack(cls_losses).mean(), torch.stack(reg_losses).mean()

# ---------------------------------------------------------------- the model
class OriginalRetinaNet(nn.Module):
    "RetinaNet P2-P7 + global classifier as the original built it (sigmoid heads, numpy anchors, per-image loss)"
    def __init__(self, backbone:str='se_resnext50_32x4d', dropout:float=0.5,
                 fpn_channels:int=256):   # the original's 256; smaller only for CPU dry runs
        super().__init__()
        self.encoder = original_encoder(backbone)
        c2, c3, c4, c5 = self.encoder.fpn_sizes
        f = fpn_channels
        self.fpn = _FPN(c2, c3, c4, c5, f)
        self.regression, self.classification = _RegressionHead(f), _ClassificationHead(f, dropout=dropout)
        self.global_cls = _GlobalHead(c5, f, dropout=dropout)
        for m in self.modules():  # the original's init, applied after the encoder was built
            if isinstance(m, nn.Conv2d): m.weight.data.normal_(0, math.sqrt(2. / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d): m.weight.data.fill_(1); m.bias.data.zero_()
        self.classification.output.weight.data.fill_(0); self.classification.output.bias.data.fill_(-math.log(99))
        self.regression.output.weight.data.fill_(0); self.regression.output.bias.data.fill_(0)

    def freeze_bn(self):
        "The original's BN freezing: BN modules in eval mode (running stats fixed), affine weights still trained"
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d): m.eval()

    def forward(self, images, annotations, global_labels):
        cs = self.encoder(images)
        feats = self.fpn(cs)
        regression = torch.cat([self.regression(f) for f in feats], 1)
        classification = torch.cat([self.classification(f) for f in feats], 1)
        global_log_probs = self.global_cls(cs[-1])
        anchors = torch.from_numpy(_anchors(images.shape[2:])).to(images.device)
        cls_loss, reg_loss = focal_loss_per_image(classification, regression, anchors, annotations)
        return cls_loss, reg_loss, F.nll_loss(global_log_probs, global_labels)

def pad_annotations(boxes_list, device):
    "The original collater: boxes xyxy per image padded to [B, max_n, 5] with -1 rows, class column 0"
    n = max(1, max(len(b) for b in boxes_list))
    out = torch.full((len(boxes_list), n, 5), -1.0)
    for i, b in enumerate(boxes_list):
        if len(b): out[i, :len(b), :4] = torch.as_tensor(b, dtype=torch.float32); out[i, :len(b), 4] = 0
    return out.to(device)

def original_step(model, opt, images, annotations, global_labels):
    "One training step of the original: train mode + frozen BN, fp32 forward, loss sum, backward, clip 0.05, Adam"
    model.train(); model.freeze_bn()
    opt.zero_grad()
    cls_loss, reg_loss, g_loss = model(images.float(), annotations, global_labels)
    loss = cls_loss + reg_loss + 0.1 * g_loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
    opt.step()
    return float(loss.detach())
