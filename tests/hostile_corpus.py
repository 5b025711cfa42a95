"""A corpus of hostile inputs for every command, and what each command must do with them.

`make_corpus(root)` writes, in about five seconds and 5 MB (a sparse 200 MB CSV among them): DICOMs (decompression bombs, truncated, empty, NaN
rescale, a folder and a FIFO named `*.dcm`, ...), labels and submission CSVs (NaN, inf, 1e30, confidences outside
0..1, Latin-1, a BOM, 20,000 boxes, duplicated rows, patientIds that are paths), board model folders (a tiny ONNX
network built with `onnx.helper`, no torch; board.json with wrong types and names leading outside the folder, ONNX
external data outside it, a model OpenCV cannot run) and write targets (a folder, a path under a file, /proc).
`CASES` lists the command lines run on it (`tests/test_hostile.py`): the exit status, the one line that must name
the file or option, the images that must still be predicted, the peak-memory bound.

    python tests/hostile_corpus.py DIR      # write the corpus to DIR, to try the commands by hand
"""
from __future__ import annotations
import json, logging, os, struct, sys, warnings, zlib
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np

SIZE = 64      # side of the good images and of the tiny network's input
GOOD = ('good1', 'good2')
# every bad DICOM of the corpus -> what its one-line message must say
BAD_DICOMS = {
    'bomb': 'header says the image is 30000x30000 pixels',          # 1 KB: both headers say 30000x30000
    'liar': 'the compressed image says it is 30000x30000 pixels',   # the DICOM header is modest, its JPEG is not
    'bomb_raw': 'header says the image is 30000x30000 pixels',      # uncompressed 16-bit, 1 KB of data
    'truncated300': 'file is truncated (it ends inside the header)',
    'truncated_px': 'file is truncated (it ends inside the pixel data)',
    'cut_before_px': 'no Pixel Data element, though the header describes an image',
    'empty_px': 'the Pixel Data element is empty',
    'nan_slope': "RescaleSlope is 'NaN', not a finite number",
    'zero_rows': 'header says the image is 0x64 pixels',
    'not_dicom': 'not a DICOM file',
    'folder': 'is a folder, not a DICOM file',
    'fifo': 'not a regular file',
}
BOMBS = ('bomb', 'liar', 'bomb_raw')
DEFLATE_MB = 64   # `deflate.dcm` inflates to this; refused under PNEUMONIA_KIT_MAX_PIXELS=1000000 (cap 18.8 MB)


# ---------------------------------------------------------------- DICOMs

def _opencv_version() -> str:
    "The OpenCV this test runs on (its messages name it): read, never assumed"
    import cv2   # only the cases that name it need OpenCV loaded
    return cv2.__version__

def _good_image(seed: int) -> np.ndarray:
    "Noise (so that its PNG is a few KB) with a bright blob"
    import cv2
    img = np.random.default_rng(seed).integers(0, 200, (SIZE, SIZE), dtype=np.uint8)
    cv2.circle(img, (SIZE // 3, SIZE // 2), SIZE // 6, 250, -1)
    return img


def _raw_dicom(path, arr, **tags):
    "An uncompressed DICOM of `arr` (2-d uint8/uint16), extra header `tags`; `PixelData` may be overridden in tags"
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
    meta = FileMetaDataset(); meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds = Dataset(); ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality, ds.PatientID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID, 'CR', Path(path).stem
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, 'MONOCHROME2'
    bits = arr.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = arr.tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # 'NaN' is not a valid DS: that is the point
        for k, v in tags.items(): setattr(ds, k, v)
        ds.save_as(path, enforce_file_format=True)
    return Path(path)


def make_dicoms(d: Path) -> Path:
    "The good and the bad DICOMs of `BAD_DICOMS` (and `deflate.dcm`) in folder `d`"
    import cv2, pydicom
    from pydicom.encaps import encapsulate
    from pneumonia_kit.dicom import write_jpeg_dicom
    d.mkdir(parents=True, exist_ok=True)
    for i, pid in enumerate(GOOD): write_jpeg_dicom(d/f'{pid}.dcm', _good_image(i), pid)
    raw = (d/'good1.dcm').read_bytes()
    jpg = cv2.imencode('.jpg', np.zeros((SIZE, SIZE), np.uint8))[1].tobytes()
    sof = jpg.index(b'\xff\xc0')
    big = jpg[:sof + 5] + (30000).to_bytes(2, 'big') * 2 + jpg[sof + 9:]   # the same tiny JPEG, declaring 30000x30000
    for name, side in (('bomb', 30000), ('liar', SIZE)):
        ds = pydicom.dcmread(d/'good1.dcm'); ds.PatientID = ds.PatientName = name
        ds.Rows = ds.Columns = side
        ds.PixelData = encapsulate([big]); ds['PixelData'].VR = 'OB'
        ds.save_as(d/f'{name}.dcm', enforce_file_format=True)
    _raw_dicom(d/'bomb_raw.dcm', np.zeros((16, 32), np.uint16), Rows=30000, Columns=30000)
    (d/'truncated300.dcm').write_bytes(raw[:300])
    (d/'truncated_px.dcm').write_bytes(raw[:len(raw) - 200])
    (d/'cut_before_px.dcm').write_bytes(raw[:raw.index(b'\xe0\x7f\x10\x00')])
    _raw_dicom(d/'empty_px.dcm', np.zeros((SIZE, SIZE), np.uint16), PixelData=b'')
    _raw_dicom(d/'nan_slope.dcm', np.full((SIZE, SIZE), 1000, np.uint16), RescaleSlope='NaN', RescaleIntercept='0')
    _raw_dicom(d/'zero_rows.dcm', np.zeros((SIZE, SIZE), np.uint8), Rows=0)
    (d/'not_dicom.dcm').write_text('patientId,x,y,width,height,Target\n')
    (d/'folder.dcm').mkdir()
    os.mkfifo(d/'fifo.dcm')   # opening it would block forever
    _deflate_bomb(d/'deflate.dcm')
    (d/'unreadable.dcm').write_bytes(raw); os.chmod(d/'unreadable.dcm', 0)   # refused to anyone but root
    return d


def _deflate_bomb(path: Path):
    "A deflated DICOM whose dataset (a private element of zeros) inflates to `DEFLATE_MB` MB"
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
    meta = FileMetaDataset(); meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    with open(path, 'wb') as f:
        f.write(bytes(128) + b'DICM'); pydicom.filewriter.write_file_meta_info(f, meta, enforce_standard=True)
        z = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        f.write(z.compress(b'\x09\x00\x10\x00OB\x00\x00' + (DEFLATE_MB << 20).to_bytes(4, 'little')))
        for _ in range(DEFLATE_MB): f.write(z.compress(bytes(1 << 20)))
        f.write(z.flush())


def make_batch(d: Path, src: Path, names) -> Path:
    "A folder of copies (folders and FIFOs made anew) of DICOMs of `src`"
    import shutil
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        s, t = src/f'{n}.dcm', d/f'{n}.dcm'
        if s.is_dir(): t.mkdir()
        elif n == 'fifo': os.mkfifo(t)
        else: shutil.copyfile(s, t)
    return d


# ---------------------------------------------------------------- CSVs
LABELS = 'patientId,x,y,width,height,Target\ngood1,10.0,12.0,20.0,30.0,1\ngood2,,,,,0\n'
SUB = 'patientId,PredictionString\ngood1,0.9 10 12 20 30\ngood2,\n'


def make_csvs(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    w = lambda name, text, enc='utf-8': (d/name).write_bytes(text.encode(enc))
    w('labels.csv', LABELS)
    w('labels_bom.csv', '\ufeff' + LABELS)
    w('labels_dup.csv', LABELS + 'good1,10.0,12.0,20.0,30.0,1\n')
    w('labels_path.csv', LABELS + '../../etc/passwd,,,,,0\n')
    w('labels_latin1.csv', LABELS + 'Ölfleck,,,,,0\n', 'latin-1')
    w('sub.csv', SUB)
    w('sub_bom.csv', '\ufeff' + SUB)
    for name, ps in (('nan', 'nan 10 12 20 30'), ('inf', '0.9 10 12 inf 30'), ('negconf', '-0.5 10 12 20 30'),
                     ('conf2', '2 10 12 20 30'), ('huge', '0.9 1e30 -1e30 1e30 1e30'), ('text', '0.9 ten 12 20 30')):
        w(f'sub_{name}.csv', f'patientId,PredictionString\ngood1,{ps}\ngood2,\n')
    w('sub_many.csv', 'patientId,PredictionString\ngood1,' + ' '.join(['0.5 1 2 3 4'] * 20000) + '\ngood2,\n')
    w('sub_latin1.csv', 'patientId,PredictionString\ngood1,0.9 10 12 20 30 \xe9\ngood2,\n', 'latin-1')
    w('sub_dup.csv', SUB + 'good1,0.5 1 2 3 4\n')
    w('sub_other.csv', 'patientId,PredictionString\nsomeone_else,0.9 10 12 20 30\n')
    return d


# ---------------------------------------------------------------- board model folders
def tiny_onnx(path: Path, size: int = SIZE, grid: int = 4):
    "A tiny network with the board model's input and outputs (average pool, 1x1 convs, reshapes), for both runtimes"
    import onnx
    from onnx import TensorProto as T, helper as h, numpy_helper as nh
    A, k = grid * grid, size // grid
    rng = np.random.default_rng(0)
    inits = [nh.from_array(np.full((1, 1, 1, 1), 4.0, np.float32), 'wc'), nh.from_array(np.array([-2.5], np.float32), 'bc'),
             nh.from_array(rng.normal(0, .1, (4, 1, 1, 1)).astype(np.float32), 'wb'), nh.from_array(np.zeros(4, np.float32), 'bb'),
             nh.from_array(np.array([1, A], np.int64), 's1'), nh.from_array(np.array([1, A, 4], np.int64), 's2'),
             nh.from_array(np.array([[1., -1., 2.]], np.float32), 'wg'), nh.from_array(np.zeros(3, np.float32), 'bg')]
    nodes = [h.make_node('AveragePool', ['image'], ['p'], kernel_shape=[k, k], strides=[k, k]),
             h.make_node('Conv', ['p', 'wc', 'bc'], ['c'], kernel_shape=[1, 1]), h.make_node('Reshape', ['c', 's1'], ['cls_logits']),
             h.make_node('Conv', ['p', 'wb', 'bb'], ['b'], kernel_shape=[1, 1]), h.make_node('Transpose', ['b'], ['bt'], perm=[0, 2, 3, 1]),
             h.make_node('Reshape', ['bt', 's2'], ['bbox_regression']),
             h.make_node('GlobalAveragePool', ['image'], ['g']), h.make_node('Flatten', ['g'], ['gf']),
             h.make_node('Gemm', ['gf', 'wg', 'bg'], ['global_logits'])]
    out = lambda n, s: h.make_tensor_value_info(n, T.FLOAT, s)
    g = h.make_graph(nodes, 'tiny', [out('image', [1, 1, size, size])],
                     [out('cls_logits', [1, A]), out('bbox_regression', [1, A, 4]), out('global_logits', [1, 3])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid('', 13)]); m.ir_version = 8
    onnx.save(m, path)
    return m


def _anchors(size=SIZE, grid=4) -> np.ndarray:
    k = size // grid
    return np.array([[x * k, y * k, x * k + 2 * k, y * k + 2 * k] for y in range(grid) for x in range(grid)], np.float32)


BOARD_JSON = dict(format_version=1, input_size=SIZE, input_name='image', output_names=['cls_logits', 'bbox_regression', 'global_logits'],
                  box_coder_weights=[10, 10, 5, 5], post=dict(final_thresh=0.1), num_anchors=16,
                  classes=['Normal', 'No Lung Opacity / Not Normal', 'Lung Opacity'], backbone='tiny', levels=[3, 7])


def _model_dir(d: Path, model=None, anchors=None, **meta) -> Path:
    import onnx
    d.mkdir(parents=True, exist_ok=True)
    if model is None: tiny_onnx(d/'model.onnx')
    else: onnx.save(model, d/'model.onnx')
    np.save(d/'anchors.npy', _anchors() if anchors is None else anchors)
    (d/'board.json').write_text(json.dumps({k: v for k, v in {**BOARD_JSON, **meta}.items() if v is not None}))
    return d


def _external(d: Path, location: str) -> Path:
    "A model folder whose float weights are external data (in `weights.bin`), named by `location`"
    import onnx
    from onnx.external_data_helper import set_external_data
    m = onnx.load(_model_dir(d)/'model.onnx')
    data = b''
    for t in m.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:   # the int64 shapes stay inside: ONNX Runtime needs them to infer shapes
            set_external_data(t, location=location, offset=len(data), length=len(t.raw_data))
            data += t.raw_data; t.ClearField('raw_data'); t.data_location = onnx.TensorProto.EXTERNAL
    (d/'weights.bin').write_bytes(data)
    onnx.save(m, d/'model.onnx')
    return d


def _int8(d: Path) -> Path:
    "The tiny model's static int8 (QDQ) version as `model_int8.onnx`: ONNX Runtime runs it, OpenCV 5.0 does not"
    from onnxruntime.quantization import QuantFormat, QuantType, CalibrationDataReader, quantize_static
    class Reader(CalibrationDataReader):
        def __init__(self): self.it = iter([{'image': np.random.default_rng(i).random((1, 1, SIZE, SIZE), np.float32)} for i in range(2)])
        def get_next(self): return next(self.it, None)
    logging.getLogger().setLevel(logging.ERROR)   # the quantiser's advice about pre-processing
    quantize_static(str(d/'model.onnx'), str(d/'model_int8.onnx'), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return d


def make_boards(d: Path) -> Path:
    "Board model folders: one good one (with an int8 model) and one per way a folder can be wrong"
    d.mkdir(parents=True, exist_ok=True)
    _int8(_model_dir(d/'ok'))
    _model_dir(d/'fv_str', format_version='1')
    _model_dir(d/'fv2', format_version=2)
    _model_dir(d/'abs_model', model_file='/etc/passwd')
    _model_dir(d/'up_anchors', anchors_file='../ok/anchors.npy')
    _model_dir(d/'zero_weights', box_coder_weights=[0, 0, 0, 0])
    _model_dir(d/'bad_types', input_size='64')
    _model_dir(d/'bad_post', post=dict(nms_thresh='0.5'))
    _model_dir(d/'bad_classes', classes=5)
    _model_dir(d/'bad_json'); (d/'bad_json'/'board.json').write_text('{"format_version": 1, ')
    _model_dir(d/'no_anchors'); (d/'no_anchors'/'anchors.npy').unlink()
    _model_dir(d/'misfit', anchors=_anchors()[:10], num_anchors=None)   # the network's 16 outputs, 10 anchors
    link = _model_dir(d/'link_model'); (link/'model.onnx').unlink(); (link/'model.onnx').symlink_to(d/'ok'/'model.onnx')
    (d/'secret.bin').write_bytes(bytes(1024))
    _external(d/'ext_ok', 'weights.bin')
    _external(d/'ext_up', '../secret.bin')
    _external(d/'ext_abs', str(d/'secret.bin'))
    return d


# ---------------------------------------------------------------- datasets (for `cache`)
def make_dataset(d: Path, dicoms: Path, names, labels: str) -> Path:
    make_batch(d/'stage_2_train_images', dicoms, names)
    (d/'stage_2_train_labels.csv').write_text(labels)
    return d


def make_corpus(root) -> Path:
    "Write the whole corpus under `root`; returns it"
    root = Path(root); root.mkdir(parents=True, exist_ok=True)
    dic = make_dicoms(root/'dicom')
    make_batch(root/'batch', dic, [*GOOD, *BAD_DICOMS])
    make_batch(root/'bombs', dic, [*GOOD, *BOMBS])
    make_batch(root/'goods', dic, GOOD)
    make_batch(root/'dup', dic, GOOD[:1])   # good1 again: two images with one patientId
    make_csvs(root/'csv')
    make_boards(root/'board')
    all_neg = 'patientId,x,y,width,height,Target\n' + ''.join(f'{n},,,,,0\n' for n in (*GOOD, *BAD_DICOMS))
    make_dataset(root/'data_mixed', dic, [*GOOD, *BAD_DICOMS], all_neg)
    make_dataset(root/'data_badlabels', dic, GOOD, LABELS + '../../etc/passwd,,,,,0\n')
    t = root/'targets'; t.mkdir()
    (t/'adir').mkdir(); (t/'afile').write_text('a file, not a folder\n')
    (t/'readonly').mkdir(); os.chmod(t/'readonly', 0o555)
    make_corpus2(root, dic)
    return root


# ---------------------------------------------------------------- round 2 (issue 21): one case or more per cause
def _jp2_padded(path: Path):
    "A JPEG 2000 DICOM with a modest header whose JP2 codestream, after 6 KB of padding boxes, declares 16000x16000"
    import pydicom
    from pydicom.encaps import encapsulate
    box = lambda kind, data: (8 + len(data)).to_bytes(4, 'big') + kind + data
    siz = b'\xff\x4f\xff\x51\x00\x29\x00\x00' + b''.join(int(v).to_bytes(4, 'big') for v in (16000, 16000, 0, 0)) + bytes(40)
    jp2 = box(b'jP  ', b'\r\n\x87\n') + box(b'ftyp', b'jp2 ' * 3) + box(b'free', bytes(6000)) + box(b'jp2c', siz)
    ds = pydicom.dcmread(path.parent/'good1.dcm'); ds.file_meta.TransferSyntaxUID = '1.2.840.10008.1.2.4.91'
    ds.PixelData = encapsulate([jp2]); ds['PixelData'].VR = 'OB'
    ds.save_as(path, enforce_file_format=True)


def _largest_allowed(path: Path, bits: int = 16, side: int = 8192):
    "The largest image the limits allow (8192x8192 at 16 bits, 128 MB of zeros), deflated to ~130 KB without building it in memory"
    import io, pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
    meta = FileMetaDataset(); meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds = Dataset(); ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID, 'CR'
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, 'MONOCHROME2', side, side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    head = io.BytesIO(); fp = pydicom.filebase.DicomFileLike(head); fp.is_implicit_VR, fp.is_little_endian = False, True
    pydicom.filewriter.write_dataset(fp, ds)   # explicit VR little endian: the deflated dataset's encoding
    n = side * side * bits // 8
    with open(path, 'wb') as f:
        f.write(bytes(128) + b'DICM'); pydicom.filewriter.write_file_meta_info(f, meta, enforce_standard=True)
        z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        f.write(z.compress(head.getvalue() + b'\xe0\x7f\x10\x00OW\x00\x00' + n.to_bytes(4, 'little')))
        for _ in range(n >> 20): f.write(z.compress(bytes(1 << 20)))
        f.write(z.flush())

def make_dicoms2(d: Path) -> Path:
    "Round 2's DICOMs: a padded JP2, a deflated bomb whose file meta group length lies, a 64-bit 8192x8192 header"
    _jp2_padded(d/'jp2_padded.dcm')
    data = bytearray((d/'deflate.dcm').read_bytes()); data[140:144] = (4).to_bytes(4, 'little')   # the group length lies
    (d/'deflate_liar.dcm').write_bytes(bytes(data))
    _largest_allowed(d/'max16.dcm')
    _raw_dicom(d/'warned.dcm', np.full((SIZE, SIZE), 1000, np.uint16), PixelData=bytes(SIZE * SIZE * 2 + 100), RescaleSlope='NaN',
               RescaleIntercept='0')   # pydicom warns of the padding while decoding; then the NaN slope is refused
    _raw_dicom(d/'wide64.dcm', np.zeros((2, 2), np.uint8), Rows=8192, Columns=8192, BitsAllocated=64, BitsStored=64, HighBit=63,
               PixelData=bytes(16))   # within the pixel limit; 512 MB of pixels
    _jpeg_cut(d/'good1.dcm', d/'jpeg_cut.dcm')
    with open(d/'trailing_zeros.dcm', 'wb') as f:   # 100 MB of zeros after the pixel data (sparse: no disk used)
        f.write((d/'good1.dcm').read_bytes()); f.truncate(100 << 20)
    from pneumonia_kit.dicom import _meta_end
    raw = (d/'good1.dcm').read_bytes(); start = _meta_end(raw[:1 << 16])[0]   # 131,072 empty elements before the rest
    elements = b''.join(struct.pack('<HH2sH', g, e, b'LO', 0) for g in (3, 5) for e in range(1 << 16))
    (d/'many_elements.dcm').write_bytes(raw[:start] + elements + raw[start:])
    return d


def _jpeg_cut(good: Path, path: Path):
    "`good` with half its JPEG's entropy-coded data gone but the end-of-image marker kept: libjpeg greys out the rest"
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames
    ds = pydicom.dcmread(good); ds.PatientID = ds.PatientName = path.stem
    frame = next(generate_frames(ds.PixelData, number_of_frames=1)).rstrip(b'\0')
    ds.PixelData = encapsulate([frame[:len(frame) // 2] + b'\xff\xd9']); ds['PixelData'].VR = 'OB'
    ds.save_as(path, enforce_file_format=True)


def _nan_model(d: Path, bias: str) -> Path:
    "The tiny network with one bias set to NaN: 'bc' gives NaN class logits, 'bb' NaN box deltas"
    import onnx
    from onnx import numpy_helper as nh
    m = onnx.load(_model_dir(d)/'model.onnx')
    for t in m.graph.initializer:
        if t.name == bias: t.CopyFrom(nh.from_array(np.full(nh.to_array(t).shape, np.nan, np.float32), bias))
    onnx.save(m, d/'model.onnx')
    return d


def _const_shape_model(d: Path) -> Path:
    "The tiny network plus a ConstantOfShape of 16384x16384 floats (1 GB) summed into its class logits: an 900-byte model"
    import onnx
    from onnx import helper as h, numpy_helper as nh
    m = tiny_onnx(_model_dir(d)/'model.onnx'); g = m.graph
    g.initializer.append(nh.from_array(np.array([1, 16384, 16384], np.int64), 'bigshape'))
    next(n for n in g.node if 'cls_logits' in n.output).output[0] = 'cls_pre'
    g.node.extend([h.make_node('ConstantOfShape', ['bigshape'], ['big'], value=nh.from_array(np.array([1.], np.float32))),
                   h.make_node('ReduceSum', ['big'], ['bs'], keepdims=0), h.make_node('Add', ['cls_pre', 'bs'], ['cls_logits'])])
    onnx.save(m, d/'model.onnx')
    return d


def make_boards2(d: Path) -> Path:
    "Round 2's model folders: board.json in UTF-16 / Latin-1 / nested 10,000 deep, anchors of strings, NaN outputs, ..."
    for name, data in (('bj_utf16', json.dumps(BOARD_JSON).encode('utf-16')),
                       ('bj_latin1', json.dumps({**BOARD_JSON, 'backbone': 'r\xe9seau'}, ensure_ascii=False).encode('latin-1')),
                       ('bj_deep', b'[' * 10000 + b']' * 10000)):
        (_model_dir(d/name)/'board.json').write_bytes(data)
    _model_dir(d/'anchors_str', anchors=np.array([['1', '2', '3', '4']] * 16))
    _nan_model(d/'nan_logits', 'bc'); _nan_model(d/'nan_deltas', 'bb')
    _const_shape_model(d/'const_shape')
    _external(d/'ext_nul', 'weights\x00.bin')
    fifo = _external(d/'ext_fifo', 'weights.fifo'); os.mkfifo(fifo/'weights.fifo')   # OpenCV would block reading it
    _model_dir(d/'victim')   # --out naming its board.json must be refused (a copy: a failure must not break the other cases)
    _model_dir(d/'victim_json')   # and so must --json-dir writing an image board.dcm's JSON over it
    return d


def make_csvs2(d: Path) -> Path:
    "Round 2's CSVs: absurd boxes, a 200 MB (sparse) submission, 10,000 true boxes on one image, 60,000 label rows, ..."
    w = lambda name, text: (d/name).write_text(text, encoding='utf-8')
    w('labels_1e300.csv', 'patientId,x,y,width,height,Target\ngood1,10,12,1e300,30,1\ngood2,,,,,0\n')
    w('sub_1e300.csv', 'patientId,PredictionString\ngood1,0.9 10 12 1e300 30\ngood2,\n')
    w('labels_neg.csv', 'patientId,x,y,width,height,Target\ngood1,,,,,0\ngood2,,,,,0\n')   # nothing counts: mAP is NaN
    w('sub_empty.csv', 'patientId,PredictionString\ngood1,\ngood2,\n')
    with open(d/'sub_200mb.csv', 'wb') as f: f.write(SUB.encode()); f.truncate(200 << 20)   # sparse: no disk used
    w('labels_10k.csv', 'patientId,x,y,width,height,Target\n' + ''.join(f'many,{i % 100},{i // 100},10,10,1\n' for i in range(10000)))
    w('sub_5k.csv', 'patientId,PredictionString\nmany,' + ' '.join(['0.5 1 2 3 4'] * 5000) + '\n')
    w('labels_60k.csv', 'patientId,x,y,width,height,Target\n' + ''.join(f'p,{i % 300},{i // 300},9,9,1\n' for i in range(60000)))
    w('sub_p.csv', 'patientId,PredictionString\np,\n')
    w('sub_bad_rows.csv', 'patientId,PredictionString\n' + 'x,1,2\n' * 20000)
    w('labels_long_pid.csv', 'patientId,x,y,width,height,Target\n' + 'x' * 100_000 + ',,,,,0\n')
    (d/'dangling.csv').symlink_to(d/'moved_away.csv'); (d/'loop.csv').symlink_to(d/'loop.csv')
    return d


def make_runs(d: Path) -> Path:
    "Run folders and checkpoints of the wrong shape (torch writes the checkpoints: this part needs it)"
    import torch, zipfile
    ck = lambda p, obj: (p.parent.mkdir(parents=True, exist_ok=True), torch.save(obj, p))
    (d/'empty_ck').mkdir(parents=True); (d/'empty_ck'/'epoch_001.pt').write_bytes(b'')   # an interrupted copy
    ck(d/'bad_types'/'epoch_001.pt', dict(model={}, config=dict(model=dict(backbone=5, image_size='big')), epoch=1))
    ck(d/'no_model_cfg'/'epoch_001.pt', dict(model={}, config=dict(train={}), epoch=1))
    for name, fname, text in (('bad_best_post', 'best_post.json', '[1, 2]'), ('bad_summary', 'summary.json', '{"best_epoch": "last"}'),
                              ('bad_log', 'log.csv', 'epoch,val_loss\n1,"unclosed\n')):
        r = d/name; (r/'checkpoints').mkdir(parents=True); (r/'checkpoints'/'epoch_001.pt').write_bytes(b'')
        (r/fname).write_text(text)
    (d/'oof_object'/'oof').mkdir(parents=True)
    np.savez(d/'oof_object'/'oof'/'epoch_001.npz', patientId=np.array([{'a': 1}], dtype=object), allow_pickle=True)
    (d/'oof_bomb'/'oof').mkdir(parents=True)
    with zipfile.ZipFile(d/'oof_bomb'/'oof'/'epoch_001.npz', 'w', zipfile.ZIP_DEFLATED) as z, z.open('scores.npy', 'w', force_zip64=True) as f:
        n = 512 << 20   # 512 MB of zeros in ~500 KB
        f.write(b'\x93NUMPY\x01\x00v\x00' + f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({n // 4},), }}".ljust(117).encode() + b'\n')
        for _ in range(n >> 20): f.write(bytes(1 << 20))
    return d


def make_corpus2(root: Path, dic: Path):
    make_dicoms2(dic)
    make_boards2(root/'board'); make_csvs2(root/'csv'); make_runs(root/'runs')
    make_batch(root/'victim', dic, GOOD)
    named = make_batch(root/'named', dic, GOOD)   # images whose PNG/JSON would replace an input: board.dcm, x.png (a DICOM)
    (named/'good1.dcm').rename(named/'board.dcm'); (named/'good2.dcm').rename(named/'x.png')
    make_batch(root/'nonascii', dic, GOOD[:1]); (root/'nonascii'/'good1.dcm').rename(root/'nonascii'/'Ölfleck.dcm')
    make_batch(root/'oddnames', dic, GOOD)
    for name in ('.hidden', 'tab\there'): (root/'oddnames'/f'{name}.dcm').write_bytes((dic/'good1.dcm').read_bytes())
    t = root/'targets'; os.mkfifo(t/'fifo.csv'); (t/'null.csv').symlink_to('/dev/null')
    make_csvs3(root/'csv')


# ---------------------------------------------------------------- what each command must do
@dataclass
class Case:
    "One command line on the corpus and what must come out; '{root}' and '{out}' (a fresh folder) are filled in"
    name: str
    argv: list                       # after the program
    rc: int                          # exit status
    says: tuple = ()                 # substrings of the one error line (rc 2), or of the summary line (rc 0/3)
    prog: str = 'pneumonia-kit'      # or 'board': python -m pneumonia_kit.board
    env: dict = field(default_factory=dict)
    fsize: int | None = None         # RLIMIT_FSIZE: writes beyond this many bytes fail, like a full disk
    max_mb: float | None = None      # bound on the process's peak resident memory
    out: str | None = None           # for a batch: the submission it writes ('{out}/sub.csv')
    good: tuple = ()                 # patientIds that must get a prediction row
    failed: tuple = ()               # patientIds that must be listed in <out>.failed.csv, with an empty row
    needs_nonroot: bool = False      # permissions mean nothing to root
    files: tuple = ()                # files that must exist afterwards
    reason: str = 'file not found'   # in <out>.failed.csv, for a failed patientId that is not one of `BAD_DICOMS`
    max_s: float | None = None       # bound on its CPU seconds (a quadratic check, a kernel started before a refusal)
    absent: tuple = ()               # paths that must not exist afterwards (writes outside the named folders)


def _bad(flag, value, cmd, *pos, option=None):
    "A parser-level refusal: `cmd *pos flag value` exits 2 naming the option"
    return Case(f'{cmd}_{flag.strip("-").replace("-", "_")}_{value}'.replace('.', '_'), [cmd, *pos, flag, value], 2,
                (f'argument {option or flag}',))


def cases() -> list:
    R, C, D, B = '{root}', '{root}/csv', '{root}/dicom', '{root}/board'
    out = []
    # --- show: every bad DICOM, one line naming it; the bombs within a small memory bound
    out.append(Case('show_good', ['show', f'{D}/good1.dcm', '--out', '{out}/good1.png'], 0, files=('{out}/good1.png',)))
    for n in (*BOMBS, 'folder', 'fifo', 'empty_px'):   # the batches below meet every bad DICOM
        out.append(Case(f'show_{n}', ['show', f'{D}/{n}.dcm', '--out', '{out}/x.png'], 2, (f'{n}.dcm', BAD_DICOMS[n]),
                        max_mb=400 if n in BOMBS else None))
    out.append(Case('show_deflate', ['show', f'{D}/deflate.dcm', '--out', '{out}/x.png'], 2, ('deflate.dcm', 'inflates to more than'),
                    env=dict(PNEUMONIA_KIT_MAX_PIXELS='1000000'), max_mb=400))
    out.append(Case('show_max_pixels', ['show', f'{D}/good1.dcm', '--out', '{out}/x.png', '--max-pixels', '100'], 2, ('good1.dcm', 'the limit is 100 pixels')))
    out.append(Case('show_missing', ['show', f'{D}/missing.dcm', '--out', '{out}/x.png'], 2, ('missing.dcm', 'file not found')))
    out.append(Case('show_unreadable', ['show', f'{D}/unreadable.dcm', '--out', '{out}/x.png'], 2, ('unreadable.dcm', 'Permission denied'), needs_nonroot=True))
    # --- show --boxes: every bad CSV
    for csv_, rc, says in (('sub_nan', 2, ('sub_nan.csv', 'line 2', 'NaN')), ('sub_inf', 2, ('sub_inf.csv', 'line 2', 'infinite')),
                           ('sub_negconf', 2, ('sub_negconf.csv', 'confidence outside 0..1')), ('sub_conf2', 2, ('sub_conf2.csv', 'confidence outside 0..1')),
                           ('sub_text', 2, ('sub_text.csv', "non-numbers: 'ten'")), ('sub_latin1', 2, ('sub_latin1.csv', 'not a UTF-8')),
                           ('sub_other', 2, ('sub_other.csv', 'no row for patientId good1')), ('labels_dup', 2, ('labels_dup.csv', 'repeats the box')),
                           ('sub_many', 2, ('sub_many.csv', 'field larger than field limit')), ('sub_huge', 2, ('sub_huge.csv', 'coordinate beyond')),
                           ('labels_bom', 0, ())):
        out.append(Case(f'show_boxes_{csv_}', ['show', f'{D}/good1.dcm', '--out', '{out}/x.png', '--boxes', f'{C}/{csv_}.csv'], rc, says,
                        files=('{out}/x.png',) if rc == 0 else ()))
    # --- where show writes
    for name, target, says in (('dir', '{root}/targets/adir', 'adir: is a folder'), ('under_file', '{root}/targets/afile/x.png', 'afile is a file, not a folder'),
                               ('proc', '/proc/pneumonia_kit_test.png', '/proc/pneumonia_kit_test.png: cannot write it')):
        out.append(Case(f'show_out_{name}', ['show', f'{D}/good1.dcm', '--out', target], 2, (says,)))
    out.append(Case('show_out_readonly', ['show', f'{D}/good1.dcm', '--out', '{root}/targets/readonly/x.png'], 2,
                    ('readonly/x.png: cannot write it (Permission denied)',), needs_nonroot=True))
    out.append(Case('show_out_full_disk', ['show', f'{D}/good1.dcm', '--out', '{out}/x.png'], 2, ('x.png: cannot write it (File too large)',), fsize=1000))
    # --- score and compare
    out.append(Case('score_good', ['score', f'{C}/sub.csv', f'{C}/labels.csv'], 0, ('mAP: 1.0000',)))
    out.append(Case('score_bom', ['score', f'{C}/sub_bom.csv', f'{C}/labels_bom.csv'], 0, ('mAP: 1.0000',)))
    for csv_, says in (('sub_inf', 'NaN or infinite'), ('sub_negconf', 'confidence outside 0..1 in box 1'), ('sub_conf2', 'confidence outside 0..1'),
                       ('sub_dup', 'patientId good1 repeated'), ('sub_latin1', 'not a UTF-8'), ('missing', 'submission file not found')):
        out.append(Case(f'score_{csv_}', ['score', f'{C}/{csv_}.csv', f'{C}/labels.csv'], 2, (f'{csv_}.csv', says)))
    for csv_, says in (('labels_dup', 'repeats the box of line 2'), ('labels_path', "patientId '../../etc/passwd' cannot name a file"),
                       ('labels_latin1', 'not a UTF-8')):
        out.append(Case(f'score_{csv_}', ['score', f'{C}/sub.csv', f'{C}/{csv_}.csv'], 2, (f'{csv_}.csv', says)))
    out.append(Case('compare_nan', ['compare', f'{C}/sub.csv', f'{C}/sub_nan.csv', f'{C}/labels.csv'], 2, ('sub_nan.csv', 'NaN')))
    out.append(_bad('--n-boot', '0', 'compare', f'{C}/sub.csv', f'{C}/sub.csv', f'{C}/labels.csv'))
    out.append(_bad('--mode', 'exact', 'score', f'{C}/sub.csv', f'{C}/labels.csv'))
    # --- board-predict: a batch of every bad DICOM, the bombs (memory), clean batches, every bad model folder
    bad = tuple(BAD_DICOMS)
    out.append(Case('bp_batch', ['board-predict', f'{B}/ok', '{root}/batch', f'{D}/missing.dcm', '--out', '{out}/sub.csv'], 3,
                    ('15 images, 13 failed', 'sub.failed.csv'), out='{out}/sub.csv', good=GOOD, failed=(*bad, 'missing'), max_mb=500))
    out.append(Case('board_batch_opencv', [f'{B}/ok', '{root}/batch', '--out', '{out}/sub.csv'], 3, ('14 images, 12 failed',),
                    prog='board', out='{out}/sub.csv', good=GOOD, failed=bad, max_mb=500))
    for png in (False, True):
        out.append(Case(f'bp_bombs{"_png" if png else ""}', ['board-predict', f'{B}/ok', '{root}/bombs', '--out', '{out}/sub.csv',
                                                             *(['--png-dir', '{out}/png'] if png else [])], 3, ('5 images, 3 failed',),
                        out='{out}/sub.csv', good=GOOD, failed=BOMBS, max_mb=400, files=('{out}/png/good1.png',) if png else ()))
    out.append(Case('bp_clean', ['board-predict', f'{B}/ok', '{root}/goods', '--out', '{out}/sub.csv', '--json-dir', '{out}/json'], 0,
                    ('2 images, 0 failed',), out='{out}/sub.csv', good=GOOD, files=('{out}/json/good2.json',)))
    out.append(Case('bp_ext_ok', ['board-predict', f'{B}/ext_ok', '{root}/goods', '--out', '{out}/sub.csv'], 0, ('0 failed',), out='{out}/sub.csv', good=GOOD))
    out.append(Case('bp_int8_ort', ['board-predict', f'{B}/ok', '{root}/goods', '--backend', 'onnxruntime', '--int8', '--out', '{out}/sub.csv'], 0, ('0 failed',), out='{out}/sub.csv', good=GOOD))
    out.append(Case('bp_max_pixels', ['board-predict', f'{B}/ok', '{root}/goods', '--max-pixels', '100', '--out', '{out}/sub.csv'], 3,
                    ('2 failed',), out='{out}/sub.csv', failed=GOOD, reason='the limit is 100 pixels'))
    for folder, says, backend in (('fv_str', "format_version must be the integer 1, got '1'", None), ('fv2', 'format_version is 2', None),
                                  ('abs_model', "model_file must be a file name inside the model folder, got '/etc/passwd'", None),
                                  ('up_anchors', "anchors_file must be a file name inside", None), ('zero_weights', 'box_coder_weights must be 4 positive numbers', None),
                                  ('bad_types', "input_size must be an integer 16..4096, got '64'", None), ('bad_json', 'not valid JSON', None),
                                  ('bad_post', "board.json: PostCfg.nms_thresh='0.5': must be a number from 0 to 1", None),
                                  ('bad_classes', 'classes must be 3 class names, got 5', None),
                                  ('no_anchors', 'missing anchors.npy', None), ('link_model', "file 'model.onnx' leads outside the model folder", None),
                                  ('ext_up', "external data '../secret.bin' leads outside", 'onnxruntime'), ('ext_up', "external data '../secret.bin' leads outside", 'opencv'),
                                  ('ext_abs', 'leads outside the model folder', 'opencv'), ('misfit', 'runtime cannot run this model', None),
                                  ('ok', f'model_int8.onnx: OpenCV {_opencv_version()} DNN cannot load the model', 'opencv-int8'), ('nowhere', 'board model folder not found', None)):
        extra = ['--backend', backend.split('-')[0]] + (['--int8'] if backend.endswith('int8') else []) if backend else []
        out.append(Case(f'bp_folder_{folder}{"_" + backend if backend else ""}', ['board-predict', f'{B}/{folder}', '{root}/goods', '--out', '{out}/sub.csv', *extra],
                        2, (f'{folder}', says), files=()))
    for name, target, says in (('dir', '{root}/targets/adir', 'adir: is a folder'), ('proc', '/proc/pneumonia_kit_test.csv', 'cannot write it'),
                               ('under_file', '{root}/targets/afile/sub.csv', 'afile is a file, not a folder')):
        out.append(Case(f'bp_out_{name}', ['board-predict', f'{B}/ok', '{root}/goods', '--out', target], 2, (says,)))
    out.append(Case('bp_png_dir_file', ['board-predict', f'{B}/ok', '{root}/goods', '--out', '{out}/sub.csv', '--png-dir', '{root}/targets/afile'], 2,
                    ('afile is a file, not a folder',)))
    out.append(Case('bp_out_readonly', ['board-predict', f'{B}/ok', '{root}/goods', '--out', '{root}/targets/readonly/sub.csv'], 2,
                    ('Permission denied',), needs_nonroot=True))
    out.append(Case('bp_out_full_disk', ['board-predict', f'{B}/ok', '{root}/goods', '--out', '{out}/sub.csv'], 2, ('sub.csv: cannot write it (File too large)',), fsize=20))
    out.append(Case('bp_env_max_pixels', ['board-predict', f'{B}/ok', '{root}/goods', '--out', '{out}/sub.csv'], 2,
                    ("PNEUMONIA_KIT_MAX_PIXELS='8k' is not a positive integer",), env=dict(PNEUMONIA_KIT_MAX_PIXELS='8k')))
    out.append(Case('bp_missing_arg', ['board-predict', f'{B}/ok', '{root}/nothing_here', '--out', '{out}/sub.csv'], 2, ('nothing_here: no such file or folder',)))
    out.append(Case('bp_dup_ids', ['board-predict', f'{B}/ok', '{root}/goods', '{root}/dup', '--out', '{out}/sub.csv'], 2, ('two images have the patientId good1',)))
    out += [_bad('--threads', '0', 'board-predict', f'{B}/ok', '{root}/goods'), _bad('--max-pixels', '-5', 'board-predict', f'{B}/ok', '{root}/goods'),
            _bad('--backend', 'ncnn', 'board-predict', f'{B}/ok', '{root}/goods')]
    out.append(Case('board_bad_folder', [f'{B}/fv_str', '{root}/goods', '--out', '{out}/sub.csv'], 2, ('python3 -m pneumonia_kit.board: error:', 'format_version'), prog='board'))
    out.append(Case('board_threads_0', [f'{B}/ok', '{root}/goods', '--threads', '0'], 2, ('argument --threads',), prog='board'))
    # --- cache: a split with every bad DICOM (the good ones cached, exit 3), labels whose patientId is a path
    out.append(Case('cache_mixed', ['cache', '{root}/data_mixed', '--size', '32', '--workers', '1'], 3, ('14 images, 12 failed', 'manifest.csv'),
                    files=('{root}/data_mixed/cache/train_32/good1.npy', '{root}/data_mixed/cache/train_32/good2.npy')))
    out.append(Case('cache_labels_path', ['cache', '{root}/data_badlabels', '--size', '32', '--workers', '1'], 2,
                    ("stage_2_train_labels.csv", "patientId '../../etc/passwd' cannot name a file")))
    out += [_bad('--size', '0', 'cache', R), _bad('--workers', '0', 'cache', R), _bad('--max-pixels', '0', 'cache', R)]
    # --- where the other commands write: refused before any work, one line naming the target
    out.append(Case('train_out_under_file', ['train', '{root}/data_mixed', '--out', '{root}/targets/afile/run'], 2,
                    ('targets/afile/run/config.json: cannot write it (', 'afile is a file, not a folder')))
    out.append(Case('predict_out_dir', ['predict', 'x.pt', '--images', '{root}/goods', '--out', '{root}/targets/adir'], 2, ('adir: is a folder',)))
    out.append(Case('synth_out_under_file', ['synth', '{root}/targets/afile/twin'], 2, ('targets/afile/twin',)))
    # --- arguments of the other commands: refused by the parser, before torch is imported
    out += [_bad('--n-images', '-3', 'synth', '{out}/twin'), _bad('--size', '0', 'synth', '{out}/twin'),
            _bad('--lr', 'nan', 'train', R), _bad('--batch-size', '0', 'train', R), _bad('--max-minutes', 'inf', 'train', R),
            _bad('--batch-size', '0', 'predict', 'x.pt'), _bad('--device', 'tpu', 'predict', 'x.pt'),
            _bad('--levels', 'P9', 'bench-board'), _bad('--stages', 'nope', 'demo')]
    return out


def cases2() -> list:
    "Round 2 (issue 21): at least one case per cause, each with the peak memory it must stay under"
    R, C, D, B, T = '{root}', '{root}/csv', '{root}/dicom', '{root}/board', '{root}/targets'
    bp = lambda name, folder, imgs, *extra, **kw: Case(name, ['board-predict', f'{B}/{folder}', *imgs, *extra], **kw)
    out = []
    # 1. one size rule for every codec, checked before decoding; memory bounded in bytes; any single file under 1 GB
    for n, says in (('jp2_padded', 'the compressed image says it is 16000x16000 pixels but the header says 64x64'),
                    ('wide64', '8192x8192 pixels of 1x64 bits need 536,870,912 bytes')):
        out.append(Case(f'show_{n}', ['show', f'{D}/{n}.dcm', '--out', '{out}/x.png'], 2, (f'{n}.dcm', says), max_mb=400))
        out.append(bp(f'bp_{n}', 'ok', [f'{D}/{n}.dcm', f'{D}/good1.dcm'], '--out', '{out}/sub.csv', rc=3, says=('2 images, 1 failed',),
                      out='{out}/sub.csv', good=('good1',), failed=(n,), reason=says, max_mb=1000))
    damaged = 'the JPEG data is damaged (libjpeg: Corrupt JPEG data: premature end of data segment)'   # and libjpeg's own line hidden
    out.append(Case('show_jpeg_cut', ['show', f'{D}/jpeg_cut.dcm', '--out', '{out}/x.png'], 2, ('jpeg_cut.dcm', damaged)))
    out.append(bp('bp_jpeg_cut', 'ok', [f'{D}/jpeg_cut.dcm', f'{D}/good1.dcm'], '--out', '{out}/sub.csv', rc=3, says=('2 images, 1 failed',),
                  out='{out}/sub.csv', good=('good1',), failed=('jpeg_cut',), reason=damaged))
    out.append(bp('bp_trailing_zeros', 'ok', [f'{D}/trailing_zeros.dcm'], '--out', '{out}/sub.csv', rc=0, says=('1 images, 0 failed',),
                  out='{out}/sub.csv', good=('trailing_zeros',), max_s=15))   # pydicom parsed the zeros: 34 s of CPU
    out.append(Case('show_many_elements', ['show', f'{D}/many_elements.dcm', '--out', '{out}/x.png'], 2,
                    ('many_elements.dcm: more than 100,000 data elements; not an X-ray',), max_s=15))
    out.append(bp('bp_max16', 'ok', [f'{D}/max16.dcm'], '--out', '{out}/sub.csv', rc=0, says=('1 images, 0 failed',), out='{out}/sub.csv',
                  good=('max16',), max_mb=1000))   # the largest image the limits allow: decoded, under the board's 1 GB
    out.append(Case('show_deflate_liar', ['show', f'{D}/deflate_liar.dcm', '--out', '{out}/x.png'], 2, ('deflate_liar.dcm', 'inflates to more than'),
                    env=dict(PNEUMONIA_KIT_MAX_PIXELS='1000000'), max_mb=400))
    out.append(bp('bp_deflate_liar', 'ok', [f'{D}/deflate_liar.dcm', f'{D}/good1.dcm'], '--out', '{out}/sub.csv', rc=3, says=('1 failed',),
                  env=dict(PNEUMONIA_KIT_MAX_PIXELS='1000000'), out='{out}/sub.csv', good=('good1',), failed=('deflate_liar',),
                  reason='inflates to more than', max_mb=1000))
    # 2. --out never destroys: devices, FIFOs, links to them, the command's own inputs; long legal names work
    for name, target, says in (('fifo', f'{T}/fifo.csv', 'fifo.csv: is a device, FIFO or socket'), ('link_devnull', f'{T}/null.csv', 'null.csv: is a device'),
                               ('dev_null', '/dev/null', '/dev/null: is a device'), ('input_dicom', f'{R}/victim/good1.dcm', 'good1.dcm: is one of the inputs'),
                               ('board_json', f'{B}/victim/board.json', 'board.json: is one of the inputs')):
        folder = 'victim' if name == 'board_json' else 'ok'
        out.append(bp(f'bp_out_{name}', folder, [f'{R}/victim'], '--out', target, rc=2, says=(says,), max_mb=400))
    out.append(bp('bp_json_dir_model', 'victim_json', [f'{R}/named/board.dcm'], '--out', '{out}/sub.csv', '--json-dir',
                  f'{B}/victim_json', rc=2, says=('victim_json/board.json: is one of the inputs', '--json-dir')))
    out.append(bp('bp_png_dir_input', 'ok', [f'{R}/named/x.png', f'{R}/goods'], '--out', '{out}/sub.csv', '--png-dir', f'{R}/named',
                  rc=2, says=('named/x.png: is one of the inputs', '--png-dir')))
    # --out and the per-image folders never replace each other's files (nothing is written: absent)
    out.append(bp('bp_out_is_png', 'ok', [f'{R}/goods'], '--out', '{out}/pics/good1.png', '--png-dir', '{out}/pics', rc=2,
                  says=('pics/good1.png: is also where --png-dir puts the PNG of image good1',), absent=('{out}/pics',)))
    out.append(bp('bp_out_is_json', 'ok', [f'{R}/goods'], '--out', '{out}/good2.json', '--json-dir', '{out}', rc=2,
                  says=('good2.json: is also where --json-dir puts the JSON of image good2',), absent=('{out}/good1.json',)))
    out.append(bp('bp_png_dir_in_out', 'ok', [f'{R}/goods'], '--out', '{out}/sub.csv', '--png-dir', '{out}/sub.csv/png', rc=2,
                  says=('png: --png-dir is', 'sub.csv or inside it'), absent=('{out}/sub.csv',)))
    out += [_bad(opt, '', 'board-predict', f'{B}/ok', f'{R}/goods', *([] if opt == '--out' else ['--out', '{out}/sub.csv']))
            for opt in ('--out', '--png-dir', '--json-dir')]   # an empty path is not the current folder
    out.append(Case('predict_out_checkpoint', ['predict', f'{R}/runs/bad_types/epoch_001.pt', '--images', f'{R}/goods', '--out',
                                               f'{R}/runs/bad_types/epoch_001.pt'], 2, ('epoch_001.pt: is one of the inputs',)))
    out.append(Case('show_out_fifo', ['show', f'{D}/good1.dcm', '--out', f'{T}/fifo.csv'], 2, ('fifo.csv: is a device, FIFO or socket',)))
    out.append(Case('show_out_input', ['show', f'{R}/victim/good2.dcm', '--out', f'{R}/victim/good2.dcm'], 2, ('good2.dcm: is one of the inputs',)))
    out.append(bp('bp_out_long_name', 'ok', [f'{R}/goods'], '--out', '{out}/' + 'n' * 240 + '.csv', rc=0, says=('0 failed',),
                  out='{out}/' + 'n' * 240 + '.csv', good=GOOD, max_mb=400))
    # 3. no NaN passes silently
    for folder in ('nan_logits', 'nan_deltas'):
        what = 'cls_logits' if folder == 'nan_logits' else 'bbox_regression'
        out.append(bp(f'bp_{folder}', folder, [f'{R}/goods'], '--out', '{out}/sub.csv', rc=3, says=('2 images, 2 failed',), out='{out}/sub.csv',
                      failed=GOOD, reason=f'the network output {what} has', max_mb=400))
    for n in ('dangling', 'loop'):   # a link that leads nowhere is not a missing file
        out.append(Case(f'score_link_{n}', ['score', f'{C}/{n}.csv', f'{C}/labels.csv'], 2, (f'{n}.csv: a link that leads nowhere',)))
    out.append(Case('score_1e300', ['score', f'{C}/sub.csv', f'{C}/labels_1e300.csv'], 2, ('labels_1e300.csv', 'line 2 (good1): box coordinate beyond')))
    out.append(Case('score_sub_1e300', ['score', f'{C}/sub_1e300.csv', f'{C}/labels.csv'], 2, ('sub_1e300.csv', 'line 2 (good1)', 'coordinate beyond')))
    out.append(Case('score_json_nan', ['score', f'{C}/sub_empty.csv', f'{C}/labels_neg.csv', '--json'], 0, ('"map": null',)))
    out.append(Case('compare_json_nan', ['compare', f'{C}/sub_empty.csv', f'{C}/sub_empty.csv', f'{C}/labels_neg.csv', '--json'], 0, ('"map_a": null',)))
    out.append(bp('bp_png_full_disk', 'ok', [f'{R}/goods'], '--out', '{out}/sub.csv', '--png-dir', '{out}/png', rc=3, says=('2 failed',), fsize=2000,
                  out='{out}/sub.csv', failed=GOOD, reason='writing the PNG/JSON'))
    # 4. every file read defensively: board folders, checkpoints, run folders, out-of-fold files, CSVs, the environment
    for folder, says, backend in (('bj_utf16', 'board.json: not a UTF-8 text file', None), ('bj_latin1', 'board.json: not a UTF-8 text file', None),
                                  ('bj_deep', 'board.json: nested too deep', None), ('anchors_str', 'anchors.npy: holds <U1, expected numbers', None),
                                  ('ext_nul', "external data 'weights\\x00.bin' is not a file name", None),
                                  ('ext_fifo', 'weights.fifo: not a regular file', 'opencv'), ('ext_fifo', 'weights.fifo: not a regular file', 'onnxruntime'),
                                  ('const_shape', 'ConstantOfShape node asks for a constant shape of 268,435,456 elements', 'opencv'),
                                  ('const_shape', 'ConstantOfShape node asks for a constant shape of 268,435,456 elements', 'onnxruntime')):
        extra = ['--backend', backend] if backend else []
        out.append(bp(f'bp_folder_{folder}{"_" + backend if backend else ""}', folder, [f'{R}/goods'], '--out', '{out}/sub.csv', *extra,
                      rc=2, says=(folder, says), max_mb=400))
    # (each of these imports torch, ~4 s of CPU: summary.json, log.csv and the bare 0-byte file are checked in 13_runs instead)
    for run, says in (('empty_ck', 'empty_ck/epoch_001.pt: empty checkpoint file (0 bytes'), ('bad_types/epoch_001.pt', 'bad_types/epoch_001.pt: '),
                      ('no_model_cfg/epoch_001.pt', 'its config has no model settings'), ('bad_best_post', 'best_post.json: not a JSON object')):
        out.append(Case(f'predict_{run.split("/")[0]}{"_file" if run.endswith(".pt") else ""}', ['predict', f'{R}/runs/{run}', '--images', f'{R}/goods',
                                                      '--out', '{out}/sub.csv', '--device', 'cpu'], 2, (says,)))
    out.append(Case('sweep_oof_object', ['sweep', f'{R}/runs/oof_object'], 2, ('epoch_001.npz: not a readable out-of-fold file',)))
    out.append(Case('sweep_oof_bomb', ['sweep', f'{R}/runs/oof_bomb'], 2, ('epoch_001.npz: its arrays inflate to 536,871,', 'refusing to read them'),
                    max_mb=1100))   # importing torch alone is ~880 MB here; inflated, the bomb would add 512 MB
    out.append(Case('score_sub_200mb', ['score', f'{C}/sub_200mb.csv', f'{C}/labels.csv'], 2, ('sub_200mb.csv: 209,715,200 bytes; a submission file here is at most',),
                    max_mb=250, max_s=5))
    out.append(Case('score_many_pairs', ['score', f'{C}/sub_5k.csv', f'{C}/labels_10k.csv'], 2, ('too many boxes to score: 1 images x 5,000 predictions x 10,000',),
                    max_mb=400))
    out.append(Case('score_labels_60k', ['score', f'{C}/sub_p.csv', f'{C}/labels_60k.csv'], 0, ('mAP: 0.0000',), max_s=15))
    out.append(bp('bp_env_superscript', 'ok', [f'{R}/goods'], '--out', '{out}/sub.csv', rc=2, says=("PNEUMONIA_KIT_MAX_PIXELS='²' is not a positive integer",),
                  env=dict(PNEUMONIA_KIT_MAX_PIXELS='²')))
    out.append(bp('bp_ascii_locale', 'ok', [f'{R}/nonascii', f'{R}/goods'], '--out', '{out}/sub.csv', rc=0, says=('3 images, 0 failed',), out='{out}/sub.csv',
                  good=('Ölfleck', *GOOD), env=dict(PYTHONUTF8='0', LC_ALL='C', LANG='C'), max_mb=400))
    out += [_bad('--n-folds', '1', 'cache', R), _bad('--size', '100000', 'synth', '{out}/twin'), _bad('--size', '30000', 'cache', R),
            _bad('--threads', '20000', 'board-predict', f'{B}/ok', f'{R}/goods')]
    # 5. one line means one line: cut, with the count of the rest; file-name patientIds checked; eda answers at once
    out.append(Case('score_sub_bad_rows', ['score', f'{C}/sub_bad_rows.csv', f'{C}/labels.csv'], 2, ('20,000 malformed submission row(s)', '... and 19,990 more')))
    out.append(Case('score_long_pid', ['score', f'{C}/sub.csv', f'{C}/labels_long_pid.csv'], 2, ('is 100,000 characters long; at most 200',)))
    out.append(bp('bp_odd_names', 'ok', [f'{R}/oddnames'], '--out', '{out}/sub.csv', rc=3, says=('4 images, 2 failed',), out='{out}/sub.csv', good=GOOD,
                  failed=('.hidden', 'tab\there'), reason='cannot name a file'))
    out.append(Case('show_warned', ['show', f'{D}/warned.dcm', '--out', '{out}/x.png'], 2,
                    ('warned.dcm', "RescaleSlope is 'NaN'", '(1 library warning(s) hidden; PNEUMONIA_KIT_VERBOSE=1 shows them)')))
    out.append(Case('eda_missing', ['eda', f'{R}/no_such_data'], 2, ('no_such_data: dataset folder not found',), max_s=5))
    # 6. ONNX Runtime writes nothing outside the named folders (its telemetry files under ~/.cache)
    out.append(bp('bp_ort_home', 'ok', [f'{R}/goods'], '--out', '{out}/sub.csv', rc=0, says=('0 failed',), out='{out}/sub.csv', good=GOOD,
                  env=dict(HOME='{out}/home', XDG_CACHE_HOME='{out}/home/.cache'), absent=('{out}/home',)))
    return out


# ---------------------------------------------------------------- round 3: numbers, repeated columns, compare's memory
def make_csvs3(d: Path) -> Path:
    "Numbers float() takes but a CSV must not hold (1_0, Arabic-Indic digits), a column named twice, Kaggle-sized labels"
    w = lambda name, text: (d/name).write_text(text, encoding='utf-8')
    w('sub_underscore.csv', 'patientId,PredictionString\ngood1,0.9 1_0 12 20 30\ngood2,\n')
    w('sub_arabic.csv', 'patientId,PredictionString\ngood1,0.9 \u0661\u0660 12 20 30\ngood2,\n')   # Arabic-Indic 10
    w('labels_underscore.csv', LABELS.replace('10.0,12.0', '1_0,12.0'))
    w('labels_arabic.csv', LABELS.replace('10.0,12.0', '\u0661\u0660,12.0'))
    w('labels_twice.csv', 'patientId,x,y,width,height,Target,patientId\ngood1,10.0,12.0,20.0,30.0,1,good2\ngood2,,,,,0,good1\n')
    w('sub_twice.csv', 'patientId,PredictionString,PredictionString\ngood1,0.9 10 12 20 30,\ngood2,,0.9 10 12 20 30\n')
    # Kaggle's size: 30,000 label rows, 22,500 images (a third with two boxes); A finds the first box, B both
    box = lambda i, k: (i * 37 % 700 + 150 * k, i * 53 % 700, 100 + i % 50, 120 + i % 70)
    lab, sub_a, sub_b = ['patientId,x,y,width,height,Target'], ['patientId,PredictionString'], ['patientId,PredictionString']
    for i in range(22500):
        pid, boxes = f'k{i:05d}', [box(i, k) for k in range(2)] if i % 3 == 0 else []
        lab += [f'{pid},{x},{y},{bw},{bh},1' for x, y, bw, bh in boxes] or [f'{pid},,,,,0']
        sub_a.append(f'{pid},' + ' '.join(f'0.9 {x} {y} {bw} {bh}' for x, y, bw, bh in boxes[:1]))
        sub_b.append(f'{pid},' + ' '.join(f'0.8 {x} {y} {bw} {bh}' for x, y, bw, bh in boxes))
    for name, rows in (('labels_30k.csv', lab), ('sub_30k_a.csv', sub_a), ('sub_30k_b.csv', sub_b)): w(name, '\n'.join(rows) + '\n')
    return d


def cases3() -> list:
    "Round 3: plain ASCII decimal numbers only, no column named twice, --n-boot's range, compare and score in bounded memory"
    C, out = '{root}/csv', []
    for csv_, says in (('sub_underscore', "non-numbers: '1_0'"), ('sub_arabic', "non-numbers: '\u0661\u0660'"), ('sub_twice', 'names the column PredictionString 2 times')):
        out.append(Case(f'score_{csv_}', ['score', f'{C}/{csv_}.csv', f'{C}/labels.csv'], 2, (f'{csv_}.csv', says)))
    for csv_, says in (('labels_underscore', "line 2 (good1): Target 1 needs numbers in x,y,width,height, got '1_0,12.0,20.0,30.0'"),
                       ('labels_arabic', 'line 2 (good1): Target 1 needs numbers'), ('labels_twice', 'names the column patientId 2 times')):
        out.append(Case(f'score_{csv_}', ['score', f'{C}/sub.csv', f'{C}/{csv_}.csv'], 2, (f'{csv_}.csv', says)))
    out.append(Case('compare_n_boot_huge', ['compare', f'{C}/sub.csv', f'{C}/sub.csv', f'{C}/labels.csv', '--n-boot', '400000000'], 2,
                    ("argument --n-boot: '400000000' is not an integer from 1 to 100000",)))
    # drawn at once, 2000 draws x 22,500 images took 1.6 GB (compare; 230 MB in chunks) and 500 x 22,500 370 MB (score; 190 MB)
    out.append(Case('compare_30k', ['compare', f'{C}/sub_30k_a.csv', f'{C}/sub_30k_b.csv', f'{C}/labels_30k.csv'], 0, ('B - A: +0.',), max_mb=500))
    out.append(Case('score_30k', ['score', f'{C}/sub_30k_b.csv', f'{C}/labels_30k.csv'], 0, ('mAP: ',), max_mb=300))
    return out


CASES = cases() + cases2() + cases3()

if __name__ == '__main__':
    if len(sys.argv) != 2: sys.exit(__doc__)
    root = make_corpus(sys.argv[1])
    files = [p for p in root.rglob('*')]
    print(f'{root}: {sum(p.is_file() for p in files)} files, {sum(p.stat().st_size for p in files if p.is_file()) / 1e3:.0f} KB; {len(CASES)} cases')
