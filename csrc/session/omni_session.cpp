#include "session/omni_session.h"

#include <optional>

#include "core/error.h"
#include "session/image_prompt.h"
#include "vision/image_preprocess.h"
#include "vision/vision_encoder.h"

namespace minicpmo {

namespace {

uint64_t fnv1a(uint64_t h, const void * data, size_t n) {
    const auto * p = static_cast<const uint8_t *>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001B3ull;
    return h;
}

uint64_t image_hash(const ImageInput & im, int max_slice_nums) {
    uint64_t h = 0xCBF29CE484222325ull;
    const int32_t dims[3] = {im.width, im.height, max_slice_nums};
    h = fnv1a(h, dims, sizeof(dims));
    return fnv1a(h, im.rgb, static_cast<size_t>(im.width) * im.height * 3);
}

SliceConfig slice_config(const VisionHparams & hp, int max_slice_nums) {
    SliceConfig c;
    c.scale_resolution = hp.scale_resolution;
    c.patch_size = hp.patch_size;
    c.max_slice_nums = max_slice_nums > 0 ? max_slice_nums : hp.max_slice_nums;
    for (int i = 0; i < 3; ++i) {
        c.mean[i] = hp.mean[i];
        c.std[i] = hp.std[i];
    }
    return c;
}

RgbImageView view_of(const ImageInput & im) {
    if (!im.rgb) fail(Status::invalid_argument, "image pixels are NULL");
    return RgbImageView{im.rgb, im.width, im.height};
}

}  // namespace

OmniSession::OmniSession(std::shared_ptr<const OmniModel> model, const LlmContextParams & params)
    : Session(model->llm(), params), omni_(std::move(model)), n_threads_(params.n_threads) {}

OmniSession::~OmniSession() = default;

void OmniSession::set_n_threads(int n_threads) {
    context().set_n_threads(n_threads);
    n_threads_ = n_threads;
    if (vision_) vision_->set_n_threads(n_threads);
}

VisionEncoder & OmniSession::vision() {
    if (!vision_) {
        std::shared_ptr<const VisionModel> vm = omni_->vision();
        if (vm->hparams().n_embd_out != context().n_embd()) {
            fail(Status::bad_model, "the vision component projects to width " + std::to_string(vm->hparams().n_embd_out) +
                                        " but the LLM has width " + std::to_string(context().n_embd()));
        }
        vision_ = std::make_unique<VisionEncoder>(std::move(vm), omni_->use_gpu(), n_threads_);
    }
    return *vision_;
}

std::vector<float> OmniSession::encode_image(const ImageInput & image, std::vector<std::vector<float>> * vit_features) {
    VisionEncoder & enc = vision();
    const PreprocessedImage pre =
        preprocess_image(view_of(image), slice_config(enc.model().hparams(), image.max_slice_nums));
    return enc.encode(pre, vit_features);
}

namespace {

struct BuiltPrompt {
    ImagePrompt prompt;
    int n_query = 0;
};

BuiltPrompt build(const LlmModel & llm, const VisionHparams & hp, const std::string & text,
                         const std::vector<ImageInput> & images, const ImagePromptOptions & options) {
    std::vector<PromptImage> layout;
    layout.reserve(images.size());
    for (const ImageInput & im : images) {
        const SliceConfig cfg = slice_config(hp, im.max_slice_nums);
        const SliceLayout sl = plan_slices(view_of(im).width, view_of(im).height, cfg);
        layout.push_back(PromptImage{sl.grid.cols, sl.grid.rows, image_hash(im, cfg.max_slice_nums)});
    }
    const bool use_id = options.use_image_id < 0 ? hp.use_image_id : options.use_image_id != 0;
    return BuiltPrompt{build_image_prompt(llm, text, layout, hp.n_query, use_id), hp.n_query};
}

}  // namespace

std::vector<llama_token> OmniSession::image_prompt_tokens(const std::string & text, const std::vector<ImageInput> & images,
                                                          const ImagePromptOptions & options) {
    if (images.empty()) return model().tokenize(text, true);
    return build(model(), vision().model().hparams(), text, images, options).prompt.tokens;
}

PrefillStats OmniSession::prefill_with_images(const std::string & text, const std::vector<ImageInput> & images,
                                              const ImagePromptOptions & options) {
    if (images.empty()) {
        if (text.find(kImageMarker) != std::string::npos) {
            fail(Status::invalid_argument, "the prompt has an image placeholder but no image was given");
        }
        return prefill(model().tokenize(text, true));
    }
    VisionEncoder & enc = vision();
    const BuiltPrompt b = build(model(), enc.model().hparams(), text, images, options);
    const ImagePrompt & p = b.prompt;
    const size_t keep = reusable_prefix(p.tokens, p.keys);

    // encode the images that have a span beyond the reused prefix
    std::vector<std::vector<float>> rows(images.size());
    const size_t n_embd = static_cast<size_t>(context().n_embd());
    for (const ImagePrompt::Span & s : p.spans) {
        if (s.pos + b.n_query > keep && rows[s.image].empty()) rows[s.image] = encode_image(images[s.image]);
    }
    std::vector<EmbeddingSpan> spans;
    spans.reserve(p.spans.size());
    for (const ImagePrompt::Span & s : p.spans) {
        const std::vector<float> & r = rows[s.image];
        const float * data = r.empty() ? nullptr : r.data() + s.slice * b.n_query * n_embd;
        if (data && (s.slice + 1) * b.n_query * n_embd > r.size()) {
            fail(Status::internal, "image encoding has fewer slices than its prompt layout");
        }
        spans.push_back(EmbeddingSpan{s.pos, static_cast<size_t>(b.n_query), data});
    }
    return prefill(p.tokens, p.keys, spans);
}

PrefillStats OmniSession::append_image(const ImageInput & image, int image_id) {
    VisionEncoder & enc = vision();
    const VisionHparams & hp = enc.model().hparams();
    const SliceConfig cfg = slice_config(hp, image.max_slice_nums);
    const SliceLayout sl = plan_slices(view_of(image).width, view_of(image).height, cfg);
    const PromptImage layout{sl.grid.cols, sl.grid.rows, image_hash(image, cfg.max_slice_nums)};
    const ImagePrompt add = build_image_prompt(model(), kImageMarker, {layout}, hp.n_query, image_id >= 0,
                                               image_id < 0 ? 0 : image_id);
    const std::vector<float> rows = encode_image(image);
    std::vector<llama_token> tokens = kv_tokens();
    std::vector<uint64_t> keys = kv_keys();
    const size_t base = tokens.size();
    tokens.insert(tokens.end(), add.tokens.begin(), add.tokens.end());
    keys.insert(keys.end(), add.keys.begin(), add.keys.end());
    const size_t n_embd = static_cast<size_t>(context().n_embd());
    std::vector<EmbeddingSpan> spans;
    for (const ImagePrompt::Span & s : add.spans) {
        spans.push_back(EmbeddingSpan{base + s.pos, static_cast<size_t>(hp.n_query), rows.data() + s.slice * hp.n_query * n_embd});
    }
    return prefill(tokens, keys, spans);
}

std::string OmniSession::chat(const std::vector<ChatMessage> & messages, const std::vector<ImageInput> & images,
                              const ImagePromptOptions & image_options, const ChatTemplateOptions & options,
                              const GenerateParams & params, const std::function<bool(const std::string &)> & on_piece) {
    prefill_with_images(render_chat(messages, options), images, image_options);
    return generate(params, on_piece);
}

}  // namespace minicpmo
